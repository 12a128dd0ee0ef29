#!/usr/bin/env python3
"""benches/tls_idle_client.py: open many TLS connections and hold them idle.

Used by benches/tls.sh to measure a server's memory per idle TLS connection.
Opens --connections TLS connections to --target (round-robin over the
--sources addresses, at most --concurrency handshakes in flight), completes
the handshake on each (and, with --request, one `GET /` keep-alive exchange),
prints `READY held=N` once every connection is up or has failed, holds them
for --hold seconds (or until SIGINT/SIGTERM), closes them and prints one
`RESULT key=value ...` line. Certificates are not verified (a benchmark on
loopback). Python standard library only; every wait is bounded.
"""

import argparse
import asyncio
import signal
import ssl
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="host:port")
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--sources", default="127.0.0.1", help="comma-separated source addresses")
    p.add_argument("--concurrency", type=int, default=100, help="handshakes in flight")
    p.add_argument("--hold", type=float, default=30.0, help="seconds to hold after READY")
    p.add_argument("--timeout", type=float, default=20.0, help="per-connection handshake bound, s")
    p.add_argument("--server-name", default="localhost")
    p.add_argument("--request", action="store_true", help="one GET / per connection before idling")
    return p.parse_args()


async def open_one(args, ctx, host, port, src, sem, held, errors):
    async with sem:
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection(
                    host, port, ssl=ctx, server_hostname=args.server_name, local_addr=(src, 0)
                ),
                args.timeout,
            )
            if args.request:
                w.write(b"GET / HTTP/1.1\r\nHost: " + args.server_name.encode() + b"\r\n\r\n")
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), args.timeout)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await asyncio.wait_for(r.readexactly(length), args.timeout)
            held.append(w)
        except Exception as e:  # noqa: BLE001 - every failure is counted by kind
            kind = type(e).__name__
            errors[kind] = errors.get(kind, 0) + 1


async def main():
    args = parse_args()
    host, port = args.target.rsplit(":", 1)
    port = int(port)
    sources = [s for s in args.sources.split(",") if s]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    sem = asyncio.Semaphore(args.concurrency)
    held, errors = [], {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    t0 = time.monotonic()
    tasks = [
        asyncio.ensure_future(open_one(args, ctx, host, port, sources[i % len(sources)], sem, held, errors))
        for i in range(args.connections)
    ]
    done = asyncio.ensure_future(asyncio.gather(*tasks))
    await asyncio.wait([done, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    elapsed = time.monotonic() - t0
    proto = cipher = "-"
    if held:
        obj = held[0].get_extra_info("ssl_object")
        if obj is not None:
            proto, cipher = obj.version(), obj.cipher()[0]
    print(f"READY held={len(held)} elapsed_s={elapsed:.2f}", flush=True)
    if not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), args.hold)
        except asyncio.TimeoutError:
            pass
    for t in tasks:
        t.cancel()
    for w in held:
        w.transport.abort()
    errs = ",".join(f"{k}:{v}" for k, v in sorted(errors.items())) or "-"
    print(
        f"RESULT connections={args.connections} ok={len(held)} failed={sum(errors.values())}"
        f" elapsed_s={elapsed:.2f} protocol={proto} cipher={cipher} errors={errs}",
        flush=True,
    )
    return 0 if len(held) == args.connections else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
