#!/usr/bin/env python3
"""The workloads W1-W3 and W6 of docs/benchmarks.md in Python asyncio, for bench/compare.

usage: asyncio_peer.py W1 COUNT            two tasks ping-pong with sleep(0)
       asyncio_peer.py Q1 COUNT            queue ping-pong through two Queue(maxsize=1)
       asyncio_peer.py W2 N ROUNDS         create_task N no-op tasks, gather
       asyncio_peer.py W3 N ROUNDS         N tasks each sleep(0.010), gather
       asyncio_peer.py W3mem N             N tasks parked on one Event: memory
       asyncio_peer.py echo-server         the W6 echo server (see EchoProtocol)

Prints one JSON object on stdout. Times are wall time (time.perf_counter_ns)
measured inside one asyncio.run() on the default event loop, the way an
asyncio program does the work: the loop's start and end are not counted.
For W2 and W3 the first round runs on a fresh process ("first_*"); the
figure is the median of the later rounds. rss_per_task: resident memory
(/proc/self/statm) read by the last task to start, while all N tasks are
alive, minus the memory before the first round, divided by N. In a
sleeping round the first tasks may already be done when the last starts
(if starting N takes more than 10 ms), so W3mem measures the memory with
all N certainly alive: N tasks wait on one asyncio.Event, and the memory
is read once all have started, then the Event is set.
"""
import asyncio
import json
import os
import statistics
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


async def w1(count):
    # One round trip = task A yields, task B runs and yields, A runs again:
    # each of the two tasks does `count` sleep(0).
    async def player():
        for _ in range(count):
            await asyncio.sleep(0)

    t0 = time.perf_counter_ns()
    await asyncio.gather(player(), player())
    return {"ns": (time.perf_counter_ns() - t0) / count}


async def q1(count):
    # Queue ping-pong: two asyncio.Queue(maxsize=1); the driver puts an item
    # on `there` and gets it back from `back`, the partner echoes it. One
    # round trip = two puts, two gets, two task switches (Q1 in ringfiber).
    there, back = asyncio.Queue(maxsize=1), asyncio.Queue(maxsize=1)

    async def partner():
        for _ in range(count):
            await back.put(await there.get())

    p = asyncio.create_task(partner())
    item = object()
    t0 = time.perf_counter_ns()
    for _ in range(count):
        await there.put(item)
        item = await back.get()
    ns = (time.perf_counter_ns() - t0) / count
    await p
    return {"ns": ns}


async def rounds(n, nrounds, sleep_s):
    state = {"started": 0, "rss": 0}
    base = rss_bytes()

    async def task():
        state["started"] += 1
        if state["started"] == n:
            state["rss"] = rss_bytes()
        if sleep_s:
            await asyncio.sleep(sleep_s)

    times = []
    rss_max = 0
    for _ in range(nrounds):
        state["started"] = 0
        t0 = time.perf_counter_ns()
        tasks = [asyncio.create_task(task()) for _ in range(n)]
        await asyncio.gather(*tasks)
        times.append(time.perf_counter_ns() - t0)
        del tasks
        rss_max = max(rss_max, state["rss"] - base)
    later = times[1:] or times
    return {
        "first_ns": times[0],
        "round_ns": statistics.median(later),
        "ns_per_task": statistics.median(later) / n,
        "first_ns_per_task": times[0] / n,
        "rss_per_task": rss_max / n,
    }


async def parked(n):
    base = rss_bytes()
    ev = asyncio.Event()
    state = {"started": 0}
    all_started = asyncio.Event()

    async def task():
        state["started"] += 1
        if state["started"] == n:
            all_started.set()
        await ev.wait()

    tasks = [asyncio.create_task(task()) for _ in range(n)]
    await all_started.wait()
    rss = rss_bytes() - base
    ev.set()
    await asyncio.gather(*tasks)
    return {"rss_per_task": rss / n, "alive": state["started"]}


class EchoProtocol(asyncio.Protocol):
    """W6: whatever arrives is written back. A Protocol rather than streams
    (a task, a StreamReader and a StreamWriter per connection): the lighter
    of asyncio's two ordinary ways; on this workload the two measured
    within the machine's noise of each other. asyncio sets TCP_NODELAY on
    its TCP transports itself."""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def echo_server():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await server.serve_forever()


def main(argv):
    if len(argv) == 2 and argv[1] == "echo-server":
        asyncio.run(echo_server())  # until killed
        return 0
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    w = argv[1]
    if w == "W1":
        out = asyncio.run(w1(int(argv[2])))
    elif w == "Q1":
        out = asyncio.run(q1(int(argv[2])))
    elif w == "W3mem":
        out = asyncio.run(parked(int(argv[2])))
    elif w in ("W2", "W3"):
        n, nrounds = int(argv[2]), int(argv[3]) if len(argv) > 3 else 3
        out = asyncio.run(rounds(n, max(nrounds, 1), 0.010 if w == "W3" else 0))
    else:
        print(f"asyncio_peer: unknown workload {w}", file=sys.stderr)
        return 2
    out["python"] = sys.version.split()[0]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
