#!/usr/bin/python3
"""Python's plain blocking sockets, as thread-per-connection programs use them: no timeout,
so every recv()/sendall() blocks in the kernel (socket.create_connection and a blocking
listener; settimeout() would make the socket non-blocking under the hood, so it is never
called). The test bounds the run from outside.

  blocking_tcp.py server PORT MODE CONNS
  blocking_tcp.py client HOST:PORT MODE CONNS

MODE rr: one connection carrying CONNS request/response exchanges (length-prefixed request
of 1 B..64 KiB, answer = its sha256). halfclose: CONNS connections one after another, each
sends 2 MiB, shutdown(SHUT_WR), then blocks in recv() for the server's answer (the server
reads to EOF, then answers the byte count and sha256, and closes). duplex: CONNS parallel
connections, one thread writing 4 MiB while another reads the server's echo of it.

Each end prints one JSON line when done: what it observed (errors as "Type: message"), and
exits 1 if it saw an error."""
import hashlib, json, random, socket, struct, sys, threading

HALFCLOSE_BYTES = 2 << 20
DUPLEX_BYTES = 4 << 20
CHUNK = 64 << 10



def split_addr(where, default_host):
    """`PORT` (then `default_host`) or `HOST:PORT`, an IPv6 HOST in brackets."""
    host, _, port = where.rpartition(":")
    return host.strip("[]") or default_host, int(port)

def data(seed, n):
    return random.Random(seed).randbytes(n)


def err(e):
    return f"{type(e).__name__}: {e}"


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += b
    return bytes(buf)


def recv_to_eof(s):
    h, n = hashlib.sha256(), 0
    while b := s.recv(CHUNK):
        h.update(b)
        n += len(b)
    return n, h.hexdigest()


def serve_conn(mode, conn, conns, out, i):
    try:
        if mode == "rr":
            for _ in range(conns):
                (n,) = struct.unpack("!I", recv_exact(conn, 4))
                conn.sendall(hashlib.sha256(recv_exact(conn, n)).digest())
            out["served"] += 1
        elif mode == "halfclose":
            n, digest = recv_to_eof(conn)
            conn.sendall(f"{n} {digest}".encode())
            out["answers"][i] = f"{n} {digest}"
        elif mode == "duplex":
            while b := conn.recv(CHUNK):
                conn.sendall(b)
            conn.shutdown(socket.SHUT_WR)
            out["echoed"] += 1
    except Exception as e:
        out["errors"].append(err(e))
    finally:
        conn.close()


def server(where, mode, conns):
    out = {"errors": []}
    if mode == "rr":
        out["served"], accepts = 0, 1
    elif mode == "halfclose":
        out["answers"], accepts = [None] * conns, conns
    else:
        out["echoed"], accepts = 0, conns
    host, port = split_addr(where, "0.0.0.0")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ls = socket.create_server((host, port), family=family, backlog=128)
    print(json.dumps({"event": "listening"}), flush=True)
    threads = []
    for i in range(accepts):
        conn, _ = ls.accept()
        t = threading.Thread(target=serve_conn, args=(mode, conn, conns, out, i))
        t.start()
        # halfclose: one connection at a time, like the client.
        t.join() if mode == "halfclose" else threads.append(t)
    for t in threads:
        t.join()
    if mode == "halfclose":
        out["answers"] = sorted(set(a or "none" for a in out["answers"]))
    return out


def client(addr, mode, conns):
    host, port = split_addr(addr, None)
    out = {"errors": []}
    if mode == "rr":
        rng, h, ok = random.Random(1), hashlib.sha256(), 0
        try:
            with socket.create_connection((host, port)) as s:
                for i in range(conns):
                    req = data(i, rng.randint(1, 64 << 10))
                    s.sendall(struct.pack("!I", len(req)) + req)
                    answer = recv_exact(s, 32)
                    ok += answer == hashlib.sha256(req).digest()
                    h.update(answer)
        except Exception as e:
            out["errors"].append(err(e))
        out.update(exchanges_ok=ok, answers_sha256=h.hexdigest())
    elif mode == "halfclose":
        payload = data(7, HALFCLOSE_BYTES)
        answers = {}
        for _ in range(conns):
            try:
                with socket.create_connection((host, port)) as s:
                    s.sendall(payload)
                    s.shutdown(socket.SHUT_WR)
                    # Blocks here until the server's answer, then EOF.
                    _, a = recv_to_eof_text(s)
            except Exception as e:
                a = err(e)
                out["errors"].append(a)
            answers[a] = answers.get(a, 0) + 1
        expected = f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"
        out.update(answers=answers, intact=answers.get(expected, 0))
    elif mode == "duplex":
        results = [None] * conns

        def one(i):
            payload = data(100 + i, DUPLEX_BYTES)
            try:
                with socket.create_connection((host, port)) as s:
                    def write():
                        try:
                            for o in range(0, len(payload), CHUNK):
                                s.sendall(payload[o:o + CHUNK])
                            s.shutdown(socket.SHUT_WR)
                        except Exception as e:
                            out["errors"].append("writer: " + err(e))
                    w = threading.Thread(target=write)
                    w.start()
                    n, digest = recv_to_eof(s)
                    w.join()
                results[i] = "intact" if (n, digest) == (len(payload), hashlib.sha256(payload).hexdigest()) else f"got {n} bytes {digest}"
            except Exception as e:
                results[i] = "reader: " + err(e)
                out["errors"].append(results[i])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(conns)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        out.update(conns=sorted(set(results)), intact=results.count("intact"))
    return out


def recv_to_eof_text(s):
    buf = bytearray()
    while b := s.recv(CHUNK):
        buf += b
    return len(buf), buf.decode(errors="replace")


if __name__ == "__main__":
    role, where, mode, conns = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    out = server(where, mode, conns) if role == "server" else client(where, mode, conns)
    print(json.dumps({"event": "done", **out}, sort_keys=True), flush=True)
    sys.exit(1 if out["errors"] else 0)
