#!/usr/bin/env python3
"""Idle keep-alive connection client for bench/idle-conns.sh (python3, stdlib only).

  idle_client.py PORT SERVER_PID N HOLD [COOKIE]

Against 127.0.0.1:PORT: samples the VmRSS of SERVER_PID (and its children) idle; opens N
keep-alive connections in batches of BATCH (env, default 200, so the listen backlog is never
overrun), each sends ONE `GET /` (with `Cookie: COOKIE` if given) and reads the full response
(must be 200); then holds all of them open and idle for HOLD seconds while watching for any the
server closes; samples VmRSS; closes every connection, waits SETTLE (env, default 2) seconds and
samples VmRSS again. Prints one JSON line with the figures.
"""
import json
import os
import resource
import selectors
import socket
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import proc  # noqa: E402  (VmRSS summed over the process tree)


def rss_kb(pid):
    return proc(pid)[1]


class Conn:
    __slots__ = ("sock", "buf", "state", "need")

    def __init__(self, sock):
        self.sock, self.buf, self.state, self.need = sock, b"", "connect", None


def response_done(c):
    """True once c.buf holds one full response; raises on a non-200 status."""
    if c.need is None:
        end = c.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = c.buf[:end].decode("latin-1").split("\r\n")
        status = head[0].split(" ", 2)
        if len(status) < 2 or status[1] != "200":
            raise RuntimeError("status line %r" % head[0])
        hdrs = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if "content-length" in hdrs:
            c.need = end + 4 + int(hdrs["content-length"])
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            c.need = -1
        else:
            raise RuntimeError("response without length: %r" % hdrs)
        if hdrs.get("connection", "").lower() == "close":
            raise RuntimeError("server answered Connection: close")
    if c.need == -1:
        return c.buf.endswith(b"0\r\n\r\n")
    return len(c.buf) >= c.need


def open_batch(port, n, request, sel):
    """Open n connections, send the request on each, read each full response."""
    conns = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.connect_ex(("127.0.0.1", port))
        c = Conn(s)
        sel.register(s, selectors.EVENT_WRITE, c)
        conns.append(c)
    pending = n
    deadline = time.monotonic() + 30
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError("batch timed out with %d of %d responses missing" % (pending, n))
        for key, _ in sel.select(timeout=1):
            c = key.data
            if c.state == "connect":
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise RuntimeError("connect failed: %s" % os.strerror(err))
                c.sock.sendall(request)  # small, fits the fresh socket buffer
                c.state = "read"
                sel.modify(c.sock, selectors.EVENT_READ, c)
            else:
                data = c.sock.recv(65536)
                if not data:
                    raise RuntimeError("server closed a connection before its response was complete")
                c.buf += data
                if response_done(c):
                    c.state, c.buf = "idle", b""
                    pending -= 1
    return conns


def main():
    port, pid, n, hold = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    cookie = sys.argv[5] if len(sys.argv) > 5 else ""
    batch = int(os.environ.get("BATCH", "200"))
    settle = float(os.environ.get("SETTLE", "2"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1024) if hard > 0 else n + 1024, hard))
    request = ("GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n"
               % (port, "Cookie: %s\r\n" % cookie if cookie else "")).encode()

    out = {"n": n, "hold_s": hold, "rss_idle_kb": rss_kb(pid)}
    sel = selectors.DefaultSelector()
    conns = []
    t0 = time.monotonic()
    while len(conns) < n:
        conns += open_batch(port, min(batch, n - len(conns)), request, sel)
    out["open_s"] = round(time.monotonic() - t0, 2)

    # Hold: every connection sits idle; a readable socket now means the server closed it
    # (or sent something unsolicited, counted the same).
    closed = 0
    end = time.monotonic() + hold
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=max(0.0, end - time.monotonic())):
            c = key.data
            try:
                data = c.sock.recv(65536)
            except OSError:
                data = b""
            sel.unregister(c.sock)
            c.state = "closed" if not data else "unsolicited"
            closed += 1
    out["rss_held_kb"] = rss_kb(pid)
    out["held_open"] = sum(1 for c in conns if c.state == "idle")
    out["closed_by_server"] = closed
    out["first_open_age_s"] = round(time.monotonic() - t0, 2)  # how long the oldest sat idle (at most)

    for c in conns:
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
    time.sleep(settle)
    out["rss_closed_kb"] = rss_kb(pid)
    out["rss_per_conn_kb"] = round((out["rss_held_kb"] - out["rss_idle_kb"]) / n, 2) if n else 0
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as e:
        print(json.dumps({"error": str(e)}))
        sys.exit(1)
