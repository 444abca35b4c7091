#!/usr/bin/env python3
"""Two listeners on one port: a blocking AF_INET one on 0.0.0.0 (a thread-per-connection
server) and a non-blocking AF_INET6 one on [::] with IPV6_V6ONLY (an event-driven server).
Each connection carries one request line and gets its SHA-256 back, then the server closes.
IPv4 connections are served with blocking sockets, IPv6 ones with non-blocking sockets.

  two_listeners.py server PORT CONNS4 CONNS6  prints {"event":"listening"} then {"event":"done",…}
  two_listeners.py client HOST PORT CONNS     prints {"event":"done",…} (HOST: an IPv4 or IPv6 address)
"""
import select
import socket
import sys

from accept_blocking import answer, client, emit


def server(port, conns4, conns6):
    ls4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls4.bind(("0.0.0.0", port))
    ls4.listen(16)  # blocking
    ls6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    ls6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    ls6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls6.bind(("::", port))
    ls6.listen(16)
    ls6.setblocking(False)
    emit(event="listening")
    seen = {"ipv4": [], "ipv6": []}
    left = {ls4: conns4, ls6: conns6}
    while any(left.values()):
        ready, _, _ = select.select([l for l, n in left.items() if n], [], [], 30)
        if not ready:
            raise TimeoutError("no connection")
        for l in ready:
            c, _ = l.accept()
            blocking = l is ls4
            c.setblocking(blocking)
            seen["ipv4" if blocking else "ipv6"].append(answer(c))
            left[l] -= 1
    emit(event="done", requests=seen)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
