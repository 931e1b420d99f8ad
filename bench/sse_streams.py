#!/usr/bin/env python3
"""bench/sse.pl's stream holder: opens N event streams to one nginx and
keeps them, answering commands on stdin with one JSON line each.
  (start)  -> {"open": N, "secs": s}   once every stream has its 200
  event    -> writes a staging flag to Redis as the daemons do, then
              {"all_secs": s, "got": n}: until every stream had its event
  quit
Usage: sse_streams.py <nginx port> <path with token> <N> <redis port>
"""
import json
import resource
import selectors
import socket
import sys
import time


def redis(port, *cmds):
    s = socket.create_connection(("127.0.0.1", port))
    out = b""
    for c in cmds:
        out += b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in (x.encode() for x in c))
    s.sendall(out)
    data = b""
    while data.count(b"\r\n") < len(cmds):
        data += s.recv(65536)
    s.close()
    return data


def main():
    port, path, n, rport = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    resource.setrlimit(resource.RLIMIT_NOFILE, (n + 1000, n + 1000))
    sel = selectors.DefaultSelector()
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
    bufs = {}
    t0 = time.time()
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        s.setblocking(False)
        bufs[s] = b""
        sel.register(s, selectors.EVENT_READ)
        if i % 500 == 499:   # let nginx accept: the backlog is finite
            pump(sel, bufs, 0)
    while sum(1 for b in bufs.values() if b"\r\n\r\n" in b) < n:
        pump(sel, bufs, 1)
        if time.time() - t0 > 120:
            break
    ok = sum(1 for b in bufs.values() if b.startswith(b"HTTP/1.1 200"))
    print(json.dumps({"open": ok, "secs": round(time.time() - t0, 2)}), flush=True)
    for line in sys.stdin:
        if line.strip() == "event":
            for s in bufs:
                bufs[s] = b""
            v = int(redis(rport, ["INCR", "tm:version"]).split(b"\r\n")[0][1:])
            t1 = time.time()
            redis(rport,
                  ["HSET", "tm:flags@staging", "banner",
                   json.dumps({"id": 1, "name": "banner", "description": "", "client_visible": True,
                               "is_enabled": bool(v % 2)})],
                  ["PUBLISH", "tm:changes",
                   json.dumps({"version": v, "kind": "flag", "environment": "staging",
                               "op": "upsert", "name": "banner"})])
            got = 0
            while got < n and time.time() - t1 < 30:
                pump(sel, bufs, 0.5)
                got = sum(1 for b in bufs.values() if b"event: message" in b)
            print(json.dumps({"all_secs": round(time.time() - t1, 4), "got": got}), flush=True)
        elif line.strip() == "quit":
            break


def pump(sel, bufs, timeout):
    for key, _ in sel.select(timeout):
        try:
            d = key.fileobj.recv(65536)
        except BlockingIOError:
            continue
        if d:
            bufs[key.fileobj] += d


if __name__ == "__main__":
    main()
