#!/usr/bin/env python3
"""Check the example servers end to end, over loopback, with bounded runs.

    check_servers.py echo --server PATH --client PATH
    check_servers.py http --server PATH
    check_servers.py chat --server PATH
    check_servers.py http-metrics --server PATH    (GET /metrics, parsed)

What a client may hold (the servers' deadlines and connection cap):

    check_servers.py http-deadlines --server PATH     (http_hello)
    check_servers.py http-bad-requests --server PATH  (http_hello)
    check_servers.py conn-cap --server PATH           (http_hello)
    check_servers.py echo-idle --server PATH          (echo_server)
    check_servers.py chat-idle --server PATH          (chat_server)

Every server is started on --port 0 (the kernel picks a free port) and must
print exactly one line, "listening on 127.0.0.1:PORT"; after the checks it
gets SIGTERM and must exit 0 within a few seconds. Every socket operation
has a timeout, so a broken server fails the check instead of hanging it.
The deadlines checked are short (0.5 to 1.5 s) and the bounds on them
generous: a connection must not close before its deadline, and must close
within seconds after it. Exit status 0 when every check passed, 1
otherwise.
"""
import argparse
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

TIMEOUT = 10.0  # per socket operation, seconds
failures = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


class Server:
    def __init__(self, path, *args, ignore_sigint=False):
        # ignore_sigint: start it as a shell starts a background job, with
        # SIGINT ignored; it must still stop on SIGINT (Linux keeps a
        # blocked signal pending even when its disposition is "ignore", so
        # the server's signalfd still reads it).
        pre = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) \
            if ignore_sigint else None
        self.proc = subprocess.Popen(
            [path, "--port", "0", *args], preexec_fn=pre,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.first = self._first_line()
        m = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)"
                         r"(?: \((\d+) loops, (reuseport|handoff)\))?\n",
                         self.first or "")
        if not check(m is not None, f"ready line: {self.first!r}"):
            self.kill()
            raise SystemExit(report())
        self.port = int(m.group(1))

    def _first_line(self):
        out = []
        t = threading.Thread(target=lambda: out.append(self.proc.stdout.readline()))
        t.daemon = True
        t.start()
        t.join(TIMEOUT)
        return out[0] if out else None

    def connect(self, rcvbuf=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(TIMEOUT)
        s.connect(("127.0.0.1", self.port))
        return s

    def stop(self, wait=TIMEOUT, sig=signal.SIGTERM):
        """Sends sig; returns (exit status or None on a hang, stdout rest, stderr)."""
        self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.proc.communicate()
            return None, out, err
        return self.proc.returncode, out, err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def stop_and_check(srv, name, expect_err=None, wait=TIMEOUT,
                   sig=signal.SIGTERM):
    rc, out, err = srv.stop(wait, sig)
    check(rc == 0, f"{name}: exit status 0 after {sig.name} (got {rc})")
    check(out == "", f"{name}: nothing on stdout but the ready line (rest: {out!r})")
    if expect_err:
        check(re.search(expect_err, err) is not None,
              f"{name}: stderr matches {expect_err!r}: {err!r}")
    return err


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def at_eof(s):
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


# ---------------------------------------------------------------- echo


def run_echo(args):
    srv = Server(args.server)
    try:
        r = subprocess.run(
            [args.client, "--port", str(srv.port), "--conns", "20",
             "--count", "300", "--size", "64"],
            capture_output=True, text=True, timeout=60)
        print(r.stdout, end="")
        check(r.returncode == 0, f"echo_client exit 0 (got {r.returncode}; {r.stderr!r})")
        check("20 connections x 300 messages of 64 bytes" in r.stdout, "client header line")
        check(re.search(r"^6000 messages in [\d.]+ s: \d+ messages/s$", r.stdout, re.M)
              is not None, "client rate line")
        check(re.search(r"^latency us: p50 [\d.]+ p90 [\d.]+ p99 [\d.]+ max [\d.]+$",
                        r.stdout, re.M) is not None, "client latency line")

        # A large message comes back whole, bytes in order.
        s = srv.connect()
        data = bytes(i * 7 % 251 for i in range(1 << 20))
        t = threading.Thread(target=s.sendall, args=(data,))
        t.start()
        got = recv_exact(s, len(data))
        t.join(TIMEOUT)
        check(got == data, "1 MiB echoed intact")

        # Graceful stop: an idle connection is closed by the server.
        s.sendall(b"ping")
        check(recv_exact(s, 4) == b"ping", "idle connection echoes before stop")
        stop_and_check(srv, "echo_server", r"stopping \(1 connections open\)")
        check(at_eof(s), "idle connection sees end-of-file on stop")
        s.close()
    finally:
        srv.kill()

    # A client that sends but never reads: its echoes fill the socket
    # buffers and the server's send blocks. Stopping must not wait for it
    # beyond the grace period. (Whether the grace period runs out depends
    # on the kernel: the shutdown at stop frees the connection's unread
    # input, and that memory sometimes lets the blocked send finish its
    # chunk, after which the connection ends gracefully. The chat check
    # below has a case where only the cancellation can end it.)
    srv = Server(args.server, "--grace", "0.3")
    try:
        s = srv.connect()
        s.setblocking(False)
        client_port = s.getsockname()[1]
        sent = 0
        deadline = time.monotonic() + TIMEOUT
        # Write until the server's socket holds unread input and unsent
        # output, steadily: its task is then blocked in a send.
        steady = 0
        while time.monotonic() < deadline and steady < 5:
            try:
                sent += s.send(b"x" * 65536)
                steady = 0
                continue
            except BlockingIOError:
                pass
            q = tcp_queues(srv.port, client_port)
            steady = steady + 1 if q and q[0] > 0 and q[1] > 0 else 0
            time.sleep(0.1)
        check(steady >= 5, f"stuck client: the server's send is blocked "
              f"(sent {sent} bytes; server socket queues {tcp_queues(srv.port, client_port)})")
        t0 = time.monotonic()
        stop_and_check(srv, "echo_server (stuck client)")
        check(time.monotonic() - t0 < 5, "stuck client: stopped within the grace period and a margin")
        s.close()
    finally:
        srv.kill()


def tcp_queues(local_port, remote_port):
    """(send queue, receive queue) in bytes of the 127.0.0.1 TCP socket
    local_port -> remote_port, from /proc/net/tcp; None if not found."""
    want_l = f"0100007F:{local_port:04X}"
    want_r = f"0100007F:{remote_port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[1] == want_l and fields[2] == want_r:
                    tx, rx = fields[4].split(":")
                    return int(tx, 16), int(rx, 16)
    except OSError:
        pass
    return None


# ---------------------------------------------------------------- http

HELLO = b"hello world!"


def read_response(s, buf=b""):
    """One response from s: (status, headers dict, body, rest of buf)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return None, {}, b"", buf
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    return status, headers, buf, b""


def response(s, buf, head_request=False):
    status, headers, buf, _ = read_response(s, buf)
    if status is None:
        return None, {}, b"", b""
    n = 0 if head_request else int(headers.get("content-length", "0"))
    while len(buf) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return status, headers, buf[:n], buf[n:]


def run_http(args):
    srv = Server(args.server, ignore_sigint=True)
    try:
        # One keep-alive connection, several requests in a row.
        s = srv.connect()
        buf = b""
        for i in range(3):
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            st, h, body, buf = response(s, buf)
            check(st == 200 and body == HELLO and h.get("content-length") == "12"
                  and "connection" not in h,
                  f"keep-alive request {i}: {st} {h} {body!r}")

        # Pipelining: three requests in one write, answered in order; the
        # last says Connection: close, so the server closes after it.
        s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"HEAD /b HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        st1, h1, b1, buf = response(s, buf)
        st2, h2, b2, buf = response(s, buf, head_request=True)
        st3, h3, b3, buf = response(s, buf)
        check(st1 == 200 and b1 == HELLO, "pipelined GET answered")
        check(st2 == 200 and b2 == b"" and h2.get("content-length") == "12",
              "pipelined HEAD answered without a body")
        check(st3 == 200 and b3 == HELLO and h3.get("connection") == "close",
              "pipelined GET with Connection: close answered with it")
        check(buf == b"" and at_eof(s), "connection closed after Connection: close")
        s.close()

        # A request that arrives a byte at a time.
        s = srv.connect()
        for b in b"GET / HTTP/1.1\r\nHost: x\r\n\r\n":
            s.send(bytes([b]))
        st, h, body, buf = response(s, b"")
        check(st == 200 and body == HELLO, "request split into 1-byte writes")

        # A body announced by Content-Length is skipped; the next request
        # on the connection is still understood.
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n")
        st, h, body, buf = response(s, buf)
        check(st == 405 and h.get("allow") == "GET, HEAD", f"POST gets 405 ({st})")
        st, h, body, buf = response(s, buf)
        check(st == 200 and body == HELLO, "request after a skipped body")
        s.close()

        # HTTP/1.0: closes unless asked to keep alive.
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        st, h, body, buf = response(s, b"")
        check(st == 200 and body == HELLO and h.get("connection") == "close"
              and at_eof(s), "HTTP/1.0 answered and closed")
        s.close()
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" * 2)
        st, h, body, buf = response(s, b"")
        st2, h2, body2, buf = response(s, buf)
        check(st == 200 and st2 == 200 and h.get("connection") == "keep-alive",
              "HTTP/1.0 keep-alive honoured")
        s.close()

        # Garbage: 400 and close.
        s = srv.connect()
        s.sendall(b"NONSENSE\r\n\r\n")
        st, h, body, buf = response(s, b"")
        check(st == 400 and at_eof(s), "malformed request: 400 and close")
        s.close()

        # curl, if present: the client most people will try first.
        if shutil.which("curl"):
            r = subprocess.run(["curl", "-sS", "-v", "--max-time", "10",
                                f"http://127.0.0.1:{srv.port}/",
                                f"http://127.0.0.1:{srv.port}/again"],
                               capture_output=True, text=True, timeout=30)
            check(r.returncode == 0 and r.stdout == "hello world!hello world!",
                  f"curl -v: {r.returncode} {r.stdout!r}")
            check("Re-using existing connection" in r.stderr
                  or "Reusing existing connection" in r.stderr,
                  "curl reused the keep-alive connection")

        # wrk, if present: a second of keep-alive load, no errors.
        if shutil.which("wrk"):
            r = subprocess.run(["wrk", "-t1", "-c10", "-d1s",
                                f"http://127.0.0.1:{srv.port}/"],
                               capture_output=True, text=True, timeout=30)
            m = re.search(r"(\d+) requests in", r.stdout)
            check(r.returncode == 0 and m is not None and int(m.group(1)) > 0
                  and "Non-2xx" not in r.stdout and "Socket errors" not in r.stdout,
                  f"wrk -t1 -c10 -d1s without errors: {r.stdout!r}")

        # Graceful stop with an idle keep-alive connection open.
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        st, h, body, buf = response(s, b"")
        check(st == 200, "idle keep-alive connection before stop")
        stop_and_check(srv, "http_hello", r"Interrupt: stopping \(1 connections open\)",
                       sig=signal.SIGINT)
        check(at_eof(s), "idle keep-alive connection closed on stop")
        s.close()
    finally:
        srv.kill()


# ---------------------------------------------------------------- chat


class Reader(threading.Thread):
    """Collects the chat lines a client receives (notices excluded)."""

    def __init__(self, sock, want):
        super().__init__(daemon=True)
        self.sock, self.want = sock, want
        self.lines = []
        self.buf = b""
        self.member = None  # the name the room gave (not Thread.name)

    def run(self):
        try:
            while len(self.lines) < self.want:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    return
                self.buf += chunk
                *full, self.buf = self.buf.split(b"\n")
                for line in full:
                    if line.startswith(b"* welcome "):
                        self.member = line[10:].decode()
                    elif not line.startswith(b"* "):
                        self.lines.append(line)
        except OSError:
            return


def run_chat(args):
    srv = Server(args.server, "--backlog", "65536")
    try:
        a, b, c = srv.connect(), srv.connect(), srv.connect()
        # A slow client: connected, never reads, a tiny receive window.
        slow = srv.connect(rcvbuf=4096)
        n_flood = 20000
        line = b"x" * 200
        rb = Reader(b, 1 + n_flood)  # a's first line, the flood
        rc = Reader(c, 2 + n_flood)  # a's and b's first lines, the flood
        ra = Reader(a, 1)
        for r in (ra, rb, rc):
            r.start()
        time.sleep(0.2)  # let every member join before the first line

        a.sendall(b"hello from a\n")
        b.sendall(b"hi from b\r\n")
        ra.join(TIMEOUT)
        check(len(ra.lines) == 1 and ra.lines[0].endswith(b": hi from b"),
              f"a got b's line (\\r stripped): {ra.lines}")
        # a sends 4 MB to the room in batches of 100 KB, each once b and c
        # have read the previous one (the room moves at their pace); slow
        # reads nothing. Its kernel buffers hold a few MB, then its outbox
        # fills, then it must be dropped, while b and c see every line.
        t0 = time.monotonic()
        batch = 500
        for i in range(0, n_flood, batch):
            a.sendall((line + b"\n") * batch)
            until = time.monotonic() + TIMEOUT
            while time.monotonic() < until and (
                    len(rb.lines) < 1 + i + batch or len(rc.lines) < 2 + i + batch):
                if not (rb.is_alive() and rc.is_alive()):
                    break
                time.sleep(0.001)
        rb.join(TIMEOUT)
        rc.join(TIMEOUT)
        for name, r in (("b", rb), ("c", rc)):
            got = [l for l in r.lines if l.endswith(line)]
            check(len(got) == n_flood,
                  f"{name} got all {n_flood} flood lines ({len(got)}) "
                  f"in {time.monotonic() - t0:.2f} s")
        check(any(l.endswith(b": hello from a") for l in rc.lines),
              "c got a's first line")
        check(not any(l.endswith(b"hello from a") for l in ra.lines),
              "a does not get its own line back")
        # The slow client was disconnected: after what is buffered, EOF.
        slow.settimeout(TIMEOUT)
        total, eof = 0, False
        try:
            while True:
                chunk = slow.recv(1 << 16)
                if not chunk:
                    eof = True
                    break
                total += len(chunk)
        except ConnectionResetError:
            eof = True
        except socket.timeout:
            pass
        check(eof, f"slow client disconnected (read {total} bytes, then EOF)")

        # The room still works after the drop.
        r2 = Reader(c, len(rc.lines) + 1)
        r2.lines = list(rc.lines)
        r2.start()
        b.sendall(b"still here\n")
        r2.join(TIMEOUT)
        check(r2.lines and r2.lines[-1].endswith(b": still here"),
              "room still works after the slow client was dropped")

        stop_and_check(srv, "chat_server",
                       r"disconnected: too slow.*\n(.|\n)*stopping \(3 connections open\)")
        for s in (a, b, c):
            s.settimeout(TIMEOUT)
            try:
                while s.recv(1 << 16):
                    pass
            except OSError:
                pass
            s.close()
        slow.close()
    finally:
        srv.kill()

    # Stopping with output queued for a member that does not read: the
    # room waits up to --grace for it, then cancels it. The outbox is made
    # large enough (--backlog 64 MiB) that the member is not dropped, and
    # 16 MB are sent to it, far more than its socket buffers take. Its
    # socket has no unread input, so nothing at stop lets its writer on.
    srv = Server(args.server, "--backlog", str(64 << 20), "--grace", "0.3")
    try:
        a = srv.connect()
        slow = srv.connect(rcvbuf=4096)
        time.sleep(0.2)
        a.sendall((b"y" * 199 + b"\n") * 80000)  # 16 MB
        # Wait until the server has read all of it (a's socket at the
        # server holds no unread input).
        a_port = a.getsockname()[1]
        until = time.monotonic() + TIMEOUT
        while time.monotonic() < until:
            q = tcp_queues(srv.port, a_port)
            if q and q[1] == 0:
                break
            time.sleep(0.05)
        time.sleep(0.2)
        t0 = time.monotonic()
        stop_and_check(srv, "chat_server (output queued for a silent member)",
                       r"cancelled 1 connections after the 0.3 s grace")
        check(time.monotonic() - t0 < 5,
              "silent member cancelled after the grace period")
        a.close()
        slow.close()
    finally:
        srv.kill()


# ------------------------------------------------- deadlines and the cap

CLOSE_WITHIN = 15.0  # seconds a connection past its deadline may take to close


def wait_closed(s, limit=CLOSE_WITHIN):
    """Read s until the server closes it (end of file or reset). Returns
    (seconds waited, bytes read before the close), or (None, bytes) when it
    was still open after limit seconds."""
    t0 = time.monotonic()
    data = b""
    while time.monotonic() - t0 < limit:
        s.settimeout(max(0.01, limit - (time.monotonic() - t0)))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - t0, data
        if not chunk:
            return time.monotonic() - t0, data
        data += chunk
    return None, data


def still_open(s, quiet):
    """True if nothing came on s (no byte, no end of file) for `quiet`
    seconds."""
    s.settimeout(quiet)
    try:
        s.recv(1)
        return False
    except socket.timeout:
        return True
    except OSError:
        return False


def run_http_deadlines(args):
    # --header-timeout 0.5: slowloris. 20 connections each send the start
    # of a request head, then one byte every 0.1 s, never the blank line.
    srv = Server(args.server, "--header-timeout", "0.5",
                 "--idle-timeout", "0.5")
    try:
        n = 20
        socks = [srv.connect() for _ in range(n)]
        t0 = time.monotonic()
        for s in socks:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            s.setblocking(False)
        got = {s: b"" for s in socks}
        closed = {}  # socket -> seconds after the first byte
        until = t0 + CLOSE_WITHIN
        while len(closed) < n and time.monotonic() < until:
            live = [s for s in socks if s not in closed]
            for s in live:
                try:
                    s.send(b"a")
                except OSError:
                    pass  # full, or already closed: the read below sees it
            readable, _, _ = select.select(live, [], [], 0.1)
            for s in readable:
                try:
                    chunk = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    got[s] += chunk
                else:
                    closed[s] = time.monotonic() - t0
        times = sorted(closed.values())
        check(len(closed) == n,
              f"slowloris: all {n} trickling connections closed "
              f"({len(closed)} within {CLOSE_WITHIN:.0f} s)")
        check(times and times[0] >= 0.4,
              f"slowloris: none closed before the 0.5 s header deadline "
              f"(first after {times[0] if times else None!r} s)")
        check(all(got[s].startswith(b"HTTP/1.1 408 ") for s in closed),
              "slowloris: each was answered 408 before the close "
              f"({sorted(set(g[:12] for g in got.values()))})")
        for s in socks:
            s.close()

        # A connection that never sends a byte: closed at the header
        # deadline (counted from the accept), without an answer.
        s = srv.connect()
        t, data = wait_closed(s)
        check(t is not None and t >= 0.4 and data == b"",
              f"silent new connection closed after the header deadline, "
              f"unanswered ({t!r} s, {data!r})")
        s.close()

        # --idle-timeout 0.5: a kept-alive connection closed when idle.
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        st, h, body, buf = response(s, b"")
        check(st == 200 and "connection" not in h,
              f"keep-alive answer before idling: {st} {h}")
        t, data = wait_closed(s)
        check(t is not None and t >= 0.4 and buf + data == b"",
              f"idle keep-alive connection closed after the idle deadline "
              f"({t!r} s, {buf + data!r})")
        s.close()
        stop_and_check(srv, "http_hello (deadlines)")
    finally:
        srv.kill()

    # The idle deadline counts from the last request, not from the
    # connection's start: requests every 0.1 s for 4 s on one connection,
    # with --idle-timeout 1.5, are all answered.
    srv = Server(args.server, "--idle-timeout", "1.5")
    try:
        s = srv.connect()
        buf, answered, t0 = b"", 0, time.monotonic()
        while time.monotonic() - t0 < 4:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            st, h, body, buf = response(s, buf)
            if st != 200:
                break
            answered += 1
            time.sleep(0.1)
        check(answered >= 10 and time.monotonic() - t0 >= 4,
              f"busy keep-alive connection outlives the idle timeout "
              f"({answered} requests in {time.monotonic() - t0:.1f} s)")
        s.close()
        stop_and_check(srv, "http_hello (busy connection)")
    finally:
        srv.kill()


def run_http_bad_requests(args):
    srv = Server(args.server)
    try:
        # A body announced as 2^63-1 bytes is not read: the answer says
        # Connection: close and the connection is closed at once.
        s = srv.connect()
        t0 = time.monotonic()
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 9223372036854775807\r\n\r\nhello")
        st, h, body, buf = response(s, b"")
        t, data = wait_closed(s)
        check(st == 405 and h.get("connection") == "close",
              f"huge Content-Length: 405 with Connection: close ({st} {h})")
        check(t is not None and time.monotonic() - t0 < 5,
              f"huge Content-Length: connection closed after the answer "
              f"({t!r} s)")
        s.close()
        # The same on a GET: 413.
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 1000000000\r\n\r\nhello")
        st, h, body, buf = response(s, b"")
        t, data = wait_closed(s)
        check(st == 413 and h.get("connection") == "close" and t is not None,
              f"GET with a 1 GB body: 413 and close ({st} {h}, {t!r} s)")
        s.close()

        # Lines ended by a bare LF: 400 and close, at once.
        for name, req in (("bare LF", b"GET / HTTP/1.1\nHost: x\n\n"),
                          ("one bare LF",
                           b"GET / HTTP/1.1\r\nHost: x\n\r\n\r\n")):
            s = srv.connect()
            t0 = time.monotonic()
            s.sendall(req)
            st, h, body, buf = response(s, b"")
            t, data = wait_closed(s)
            check(st == 400 and h.get("connection") == "close" and t is not None
                  and time.monotonic() - t0 < 5,
                  f"{name}: 400 and close ({st} {h}, {t!r} s)")
            s.close()
        stop_and_check(srv, "http_hello (bad requests)")
    finally:
        srv.kill()


def run_conn_cap(args):
    # --max-conns 3: three keep-alive connections are served; a fourth
    # waits in the listen backlog, unanswered, until one of them ends.
    srv = Server(args.server, "--max-conns", "3")
    try:
        first = [srv.connect() for _ in range(3)]
        for i, s in enumerate(first):
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            st, h, body, buf = response(s, b"")
            check(st == 200, f"connection {i + 1} of 3 served ({st})")
        extra = srv.connect()  # the kernel completes the handshake
        extra.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        check(still_open(extra, 1.0),
              "a 4th connection over --max-conns 3 is not served")
        for s in first:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            st, h, body, buf = response(s, b"")
            check(st == 200, f"the 3 connections are still served ({st})")
        check(still_open(extra, 0.3), "... and the 4th still waits")
        first[0].close()
        extra.settimeout(TIMEOUT)
        st, h, body, buf = response(extra, b"")
        check(st == 200 and body == HELLO,
              f"the 4th is served once one of the 3 has closed ({st})")
        stop_and_check(srv, "http_hello (--max-conns 3)",
                       r"stopping \(3 connections open\)")
        for s in first[1:] + [extra]:
            s.close()
    finally:
        srv.kill()


def run_echo_idle(args):
    # --idle-timeout 1.5: a connection that echoes every 0.1 s for 4 s
    # stays open; one silent from the start is closed after 1.5 s.
    srv = Server(args.server, "--idle-timeout", "1.5")
    try:
        busy, quiet = srv.connect(), srv.connect()
        t0 = time.monotonic()
        ok = True
        while time.monotonic() - t0 < 4 and ok:
            busy.sendall(b"ping")
            ok = recv_exact(busy, 4) == b"ping"
            time.sleep(0.1)
        check(ok, f"busy connection echoes for 4 s past a 1.5 s idle "
              f"timeout ({time.monotonic() - t0:.1f} s)")
        t, data = wait_closed(quiet)
        check(t is not None and data == b"",
              f"silent connection closed by the idle deadline "
              f"({time.monotonic() - t0:.1f} s after it opened)")
        # One that echoed, then fell silent: closed too, not before 1.5 s.
        s = srv.connect()
        s.sendall(b"pong")
        check(recv_exact(s, 4) == b"pong", "echo before idling")
        t, data = wait_closed(s)
        check(t is not None and t >= 1.4 and data == b"",
              f"connection closed 1.5 s after its last echo ({t!r} s)")
        for x in (busy, quiet, s):
            x.close()
        stop_and_check(srv, "echo_server (--idle-timeout)")
    finally:
        srv.kill()


def run_chat_idle(args):
    # --idle-timeout 1: a silent member is dropped, and the room is told;
    # a member that talks every 0.1 s stays.
    srv = Server(args.server, "--idle-timeout", "1")
    try:
        quiet = srv.connect()
        talker = srv.connect()
        t0 = time.monotonic()
        talker.settimeout(0.1)
        heard, buf = [], b""
        while time.monotonic() - t0 < CLOSE_WITHIN and \
                not any(l.endswith(b" dropped: idle") for l in heard):
            talker.sendall(b"still here\n")
            try:
                chunk = talker.recv(65536)
            except socket.timeout:
                chunk = b"-"
            if not chunk:
                break
            if chunk != b"-":
                buf += chunk
                *lines, buf = buf.split(b"\n")
                heard += lines
        dropped = [l for l in heard if l.endswith(b" dropped: idle")]
        check(len(dropped) == 1 and time.monotonic() - t0 >= 0.9,
              f"silent member dropped as idle, the room told "
              f"({dropped}, {time.monotonic() - t0:.1f} s)")
        t, data = wait_closed(quiet)
        check(t is not None and data.startswith(b"* welcome "),
              f"silent member's connection closed ({t!r} s, {data[:40]!r})")
        stop_and_check(srv, "chat_server (--idle-timeout)",
                       r"user1 disconnected: idle for 1 s")
        quiet.close()
        talker.close()
    finally:
        srv.kill()


# ---------------------------------------------------------------- loops


def stop_loops(srv, kind, clients, accept):
    """Stop a --loops 2 server with `clients` open: each loop says how many
    it served, they add up, and handoff (fewest open first) splits them
    evenly between the loops."""
    err = stop_and_check(srv, f"{kind} --loops 2",
                         rf"stopping \({clients} connections open\)")
    served = [int(n) for n in
              re.findall(r"loop \d served (\d+) connections", err)]
    check(len(served) == 2 and sum(served) == clients,
          f"each loop says what it served, {clients} in all: {served}")
    if accept == "handoff":
        check(served == [clients // 2, clients // 2],
              f"handoff evens the loops out: {served}")


def run_loops(args, kind):
    # --loops 2: 64 clients at once, every one served; each loop says how
    # many it served, and the counts add up. With --accept handoff, loop 0
    # hands each connection to the loop with the fewest open: 64 clients
    # open together end up 32 and 32.
    srv = Server(args.server, "--loops", "2", "--accept", args.accept)
    clients = 64
    try:
        socks = [srv.connect() for _ in range(clients)]
        ok = 0
        for rnd in range(3):
            for i, s in enumerate(socks):
                if kind == "echo":
                    msg = f"client {i} round {rnd}\n".encode()
                    s.sendall(msg)
                    ok += recv_exact(s, len(msg)) == msg
                else:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    st, h, body, buf = response(s, b"")
                    ok += st == 200 and body == HELLO
        check(ok == 3 * clients,
              f"{kind} --loops 2 --accept {args.accept}: {ok} of "
              f"{3 * clients} exchanges right over {clients} connections")
        stop_loops(srv, kind, clients, args.accept)
        for s in socks:
            s.close()
    finally:
        srv.kill()


def run_chat_loops(args):
    # --loops 2: a line said by a member on one loop reaches the members on
    # the other (through the loops' relay channels), and nobody gets a line
    # twice or their own back. With --accept handoff the clients alternate
    # between the loops (the one with fewer open), so half the lines cross.
    srv = Server(args.server, "--loops", "2", "--accept", args.accept)
    clients = 8
    try:
        socks = [srv.connect() for _ in range(clients)]
        readers = [Reader(s, clients - 1) for s in socks]
        for r in readers:
            r.start()
        until = time.monotonic() + TIMEOUT
        while time.monotonic() < until and any(r.member is None for r in readers):
            time.sleep(0.01)
        names = [r.member for r in readers]
        check(None not in names and len(set(names)) == clients,
              f"every member welcomed, names unique across loops: {names}")
        for i, s in enumerate(socks):
            s.sendall(f"line {i}\n".encode())
        for r in readers:
            r.join(TIMEOUT)
        for i, r in enumerate(readers):
            want = sorted(f"{names[j]}: line {j}".encode()
                          for j in range(clients) if j != i)
            check(sorted(r.lines) == want,
                  f"client {i} got every other member's line once: {r.lines}")
        stop_loops(srv, "chat", clients, args.accept)
        for s in socks:
            s.close()
    finally:
        srv.kill()

# ---------------------------------------------------------------- metrics


def parse_prometheus(text):
    """Prometheus' text exposition format (0.0.4), strictly: every sample
    is name{labels} value, its family announced by # TYPE before it.
    Returns {(name, frozenset(labels)): value}; raises ValueError."""
    types, samples = {}, {}
    line_re = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\} (\S+)$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    if not text.endswith("\n"):
        raise ValueError("the text does not end with a newline")
    for line in text[:-1].split("\n"):
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            if kind not in ("counter", "gauge", "histogram"):
                raise ValueError(f"type {kind!r}")
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        m = line_re.match(line)
        if not m:
            raise ValueError(f"not a sample: {line!r}")
        name, labels, value = m.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) \
            if name not in types else name
        if family not in types:
            raise ValueError(f"{name} has no # TYPE before it")
        pairs = label_re.findall(labels)
        if ",".join(f'{k}="{v}"' for k, v in pairs) != labels:
            raise ValueError(f"labels {labels!r}")
        key = (name, frozenset(pairs))
        if key in samples:
            raise ValueError(f"{name}{{{labels}}} twice")
        samples[key] = float(value)
    return samples


def metric_sum(samples, name, **want):
    return sum(v for (n, labels), v in samples.items() if n == name
               and all((k, str(x)) in labels for k, x in want.items()))


def scrape(srv):
    s = srv.connect()
    s.sendall(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
    st, h, body, _ = response(s, b"")
    s.close()
    check(st == 200 and h.get("content-type", "").startswith("text/plain"),
          f"GET /metrics: {st} {h.get('content-type')}")
    try:
        return parse_prometheus(body.decode())
    except ValueError as e:
        check(False, f"/metrics parses as Prometheus text: {e}")
        return {}


def run_http_metrics(args):
    srv = Server(args.server, "--loops", "2")
    try:
        before = scrape(srv)
        loops = {dict(labels)["loop"] for (n, labels) in before
                 if n == "ringfiber_switches_total"}
        check(len(loops) == 2, f"a sample per loop: loops {sorted(loops)}")
        # Load: 200 keep-alive requests over 4 connections.
        conns = [srv.connect() for _ in range(4)]
        for _ in range(50):
            for s in conns:
                s.sendall(b"GET / HTTP/1.1\r\n\r\n")
            for s in conns:
                st, _, body, _ = response(s, b"")
                check(st == 200, "load request answered") if st != 200 else None
        after = scrape(srv)
        for name, least in (("ringfiber_read_bytes_total", 200 * 18),
                            ("ringfiber_written_bytes_total", 200 * 100),
                            ("ringfiber_switches_total", 200),
                            ("ringfiber_tasks_spawned_total", 4)):
            grew = metric_sum(after, name) - metric_sum(before, name)
            check(grew >= least, f"{name} grew by {grew:.0f} (>= {least})")
        recv = metric_sum(after, "ringfiber_ops_total", op="recv") - \
            metric_sum(before, "ringfiber_ops_total", op="recv")
        check(recv >= 200, f"ringfiber_ops_total{{op=\"recv\"}} grew by {recv:.0f}")
        alive = metric_sum(after, "ringfiber_tasks_alive")
        check(alive >= 4, f"ringfiber_tasks_alive {alive:.0f} with 4 connections open")
        for s in conns:
            s.close()
        stop_and_check(srv, "http_hello (metrics)")
    finally:
        srv.kill()


def report():
    if failures:
        print(f"{len(failures)} check(s) failed", flush=True)
        return 1
    print("all checks passed", flush=True)
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["echo", "http", "chat", "http-deadlines",
                                    "http-bad-requests", "conn-cap",
                                    "echo-idle", "chat-idle", "echo-loops",
                                    "http-loops", "chat-loops",
                                    "http-metrics"])
    p.add_argument("--server", required=True)
    p.add_argument("--client")
    p.add_argument("--accept", default="reuseport")
    args = p.parse_args()
    {"echo": run_echo, "http": run_http, "chat": run_chat,
     "http-deadlines": run_http_deadlines,
     "http-bad-requests": run_http_bad_requests, "conn-cap": run_conn_cap,
     "echo-idle": run_echo_idle, "chat-idle": run_chat_idle,
     "echo-loops": lambda a: run_loops(a, "echo"),
     "http-loops": lambda a: run_loops(a, "http"),
     "chat-loops": run_chat_loops,
     "http-metrics": run_http_metrics}[args.mode](args)
    return report()


if __name__ == "__main__":
    sys.exit(main())
