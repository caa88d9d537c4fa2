#!/usr/bin/env python3
"""Opens N keep-alive connections to HOST:PORT, sends one GET on each (so every connection
has been through a full request, as a real idle client's has), then holds them idle.

Prints "READY <open> <failed>" once all are set up, then holds until --hold seconds pass,
stdin closes or SIGTERM. Python stdlib only."""
import argparse
import asyncio
import resource
import signal
import sys


async def one(host, port, path, sem, conns, failures):
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            w.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await asyncio.wait_for(r.readexactly(length), 10)
            if not head.startswith(b"HTTP/1.1 200"):
                failures.append(head[:40])
            conns.append(w)
        except Exception as e:  # noqa: BLE001 - counted and reported
            failures.append(repr(e))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--path", default="/bench/hello")
    ap.add_argument("--hold", type=float, default=60)
    ap.add_argument("--parallel", type=int, default=200)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.count + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard > 0 else want, hard))
    sem = asyncio.Semaphore(a.parallel)
    conns, failures = [], []
    await asyncio.gather(*(one(a.host, a.port, a.path, sem, conns, failures) for _ in range(a.count)))
    print(f"READY {len(conns)} {len(failures)}", flush=True)
    if failures:
        print(f"first failure: {failures[0]}", file=sys.stderr, flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), stop.set)  # stdin closed or a line: stop
    try:
        await asyncio.wait_for(stop.wait(), a.hold)
    except asyncio.TimeoutError:
        pass
    for w in conns:
        w.close()


if __name__ == "__main__":
    asyncio.run(main())
