"""Idle keep-alive connections and the memory a proxy holds for them.

Usage: idle.py --pids PID... --path PATH --conns N PORT [tls:PORT ...]

For each PORT in turn (tls:PORT over TLS 1.3, the certificate not checked): opens N client
connections that each send one GET PATH, read the answer and then stay open and silent, and
reads the resident memory of the proxy (the processes PID... and their child processes) before
and after. The connections of one port stay open while the next port's are opened, so no port's
connections reuse memory another's freed. Prints one line per port:

    <plain|tls> <connections still open> <RSS KiB before> <RSS KiB after> <errors>

Requests go out a few at a time (--concurrency), as idle clients' requests would, so the proxy
needs no more upstream connections than a warm-up with as many connections gave it. RSS is
user-space memory: the kernel's socket buffers are in no process's RSS.
"""
import argparse
import asyncio
import os
import ssl
import sys
import time


def rss_kib(pids):
    """VmRSS of the processes and their children (nginx's workers), in KiB."""
    seen, todo, total = set(), list(pids), 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


async def settled_rss(pids, deadline_s=5.0):
    """RSS once two readings 0.5 s apart agree within 0.2 % (or 64 KiB), or after deadline_s."""
    end = time.monotonic() + deadline_s
    last = rss_kib(pids)
    while time.monotonic() < end:
        await asyncio.sleep(0.5)
        now = rss_kib(pids)
        if abs(now - last) <= max(64, now // 500):
            return now
        last = now
    return last


async def one(port, path, context, gate):
    """A connection that made one request and now idles; None if that failed."""
    async with gate:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=context), 10
            )
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if not head.startswith(b"HTTP/1.1 200"):
                raise ValueError(head.split(b"\r\n")[0])
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await asyncio.wait_for(reader.readexactly(length), 10)
            return reader, writer
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
            print(f"connection to {port} failed: {e!r}", file=sys.stderr)
            return None


async def run(args):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    gate = asyncio.Semaphore(args.concurrency)
    held = []
    for target in args.ports:
        tls = target.startswith("tls:")
        port = int(target.removeprefix("tls:"))
        before = await settled_rss(args.pids)
        conns = await asyncio.gather(
            *(one(port, args.path, context if tls else None, gate) for _ in range(args.conns))
        )
        live = [c for c in conns if c]
        # Whatever the proxy does once a connection is idle (timers, buffers released) has
        # happened when the memory stops moving.
        after = await settled_rss(args.pids)
        still_open = sum(1 for reader, _ in live if not reader.at_eof())
        print(
            f"{'tls' if tls else 'plain'} {still_open} {before} {after} {args.conns - still_open}",
            flush=True,
        )
        held.extend(live)
    for _, writer in held:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in held), return_exceptions=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pids", type=int, nargs="+", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--conns", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("ports", nargs="+")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
