#!/usr/bin/env python3
"""A server as gunicorn's sync worker is written: a non-blocking listening socket (Python's
timeout on the listener), accepted sockets in blocking mode, one request per connection,
answered, then closed by the server. Its client uses a socket with a timeout (non-blocking
underneath, as Python implements timeouts), and runs the connections one after another.

  accept_blocking.py server PORT CONNS [ADDR] prints {"event":"listening"} then {"event":"done",…}
                                            (listens on ADDR, default 0.0.0.0; "::" for IPv6)
  accept_blocking.py client HOST PORT CONNS prints {"event":"done",…}

two_listeners.py imports the request handling and the client from here.
"""
import hashlib
import json
import select
import socket
import sys


def emit(**kv):
    print(json.dumps(kv), flush=True)


def read_line(s, blocking=True):
    buf = b""
    while not buf.endswith(b"\n"):
        if not blocking:
            select.select([s], [], [], 30)
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def server(port, conns, addr="0.0.0.0"):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    lst = socket.create_server((addr, port), family=family)
    lst.settimeout(30)  # O_NONBLOCK on the listener; accept() then returns blocking sockets
    emit(event="listening")
    seen = []
    for i in range(conns):
        c, _ = lst.accept()
        assert c.getblocking(), "accepted socket is blocking"
        seen.append(answer(c))
    emit(event="done", requests=seen)


def answer(c):
    """Reads the request line of accepted socket c, sends its SHA-256 back (4 KiB: sendall
    completes at once, also non-blocking), closes c; returns the request's length."""
    req = read_line(c, c.getblocking())
    c.sendall(hashlib.sha256(req).hexdigest().encode() * 64 + b"\n")
    c.close()
    return len(req)


def client(host, port, conns):
    answers = []
    for i in range(conns):
        # A timeout makes the socket non-blocking underneath: an event-driven client.
        s = socket.create_connection((host, port), timeout=30)
        s.sendall(b"request %d " % i + b"x" * 4096 + b"\n")
        ans = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            ans += chunk
        s.close()
        answers.append(hashlib.sha256(ans).hexdigest()[:16])
    emit(event="done", answers=answers)


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "server":
        server(int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:5])
    else:
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
