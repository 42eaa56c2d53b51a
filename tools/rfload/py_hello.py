#!/usr/bin/env python3
"""A keep-alive HTTP/1.1 "hello world!" server on asyncio, one thread.

It spends several times the CPU per request that rfload or wrk do, so
a comparison of the two clients against it measures the server, not the
client (see compare_wrk.sh and README "Load generator").

    py_hello.py PORT [DELAY_MS]

DELAY_MS: each answer waits that long first (asyncio.sleep), a server
whose latency is its own and large: where two load generators' own
timing errors are small beside it, their percentiles can be compared.
"""
import asyncio
import sys

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n"
            b"Content-Type: text/plain\r\n\r\nhello world!")


DELAY = 0.0


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            if DELAY:
                await asyncio.sleep(DELAY)
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()


async def main(port):
    server = await asyncio.start_server(serve, "127.0.0.1", port,
                                        backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) > 2:
        DELAY = float(sys.argv[2]) / 1000
    asyncio.run(main(int(sys.argv[1])))
