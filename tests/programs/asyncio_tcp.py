#!/usr/bin/python3
"""Python asyncio streams (asyncio.start_server / asyncio.open_connection): non-blocking
sockets driven by epoll, as event-driven programs use them.

  asyncio_tcp.py server PORT RR HALFCLOSES
  asyncio_tcp.py client HOST:PORT RR HALFCLOSES

The client first makes RR length-prefixed request/response exchanges (1 B..64 KiB, answer =
the request's sha256) on one connection, then HALFCLOSES connections one after another, each
writing 2 MiB, half-closing with write_eof() and reading the server's answer (byte count and
sha256 of what it read to EOF) to EOF. Each end prints one JSON line when done (errors as
"Type: message") and exits 1 if it saw an error."""
import asyncio, hashlib, json, random, struct, sys

HALFCLOSE_BYTES = 2 << 20



def split_addr(where, default_host):
    """`PORT` (then `default_host`) or `HOST:PORT`, an IPv6 HOST in brackets."""
    host, _, port = where.rpartition(":")
    return host.strip("[]") or default_host, int(port)

def err(e):
    return f"{type(e).__name__}: {e}"


async def server(where, rr, halfcloses):
    out = {"errors": [], "exchanges": 0, "answers": {}}
    left = 1 + halfcloses
    finished = asyncio.Event()

    async def handle(reader, writer):
        nonlocal left
        try:
            first = await reader.read(1)
            if first == b"R":
                for _ in range(rr):
                    (n,) = struct.unpack("!I", await reader.readexactly(4))
                    writer.write(hashlib.sha256(await reader.readexactly(n)).digest())
                    await writer.drain()
                    out["exchanges"] += 1
            else:
                h, n = hashlib.sha256(first), len(first)
                while b := await reader.read(1 << 16):
                    h.update(b)
                    n += len(b)
                a = f"{n} {h.hexdigest()}"
                out["answers"][a] = out["answers"].get(a, 0) + 1
                writer.write(a.encode())
                await writer.drain()
        except Exception as e:
            out["errors"].append(err(e))
        finally:
            writer.close()
            await writer.wait_closed()
            left -= 1
            if left == 0:
                finished.set()

    host, port = split_addr(where, "0.0.0.0")
    srv = await asyncio.start_server(handle, host, port)
    print(json.dumps({"event": "listening"}), flush=True)
    async with srv:
        await finished.wait()
    return out


async def client(addr, rr, halfcloses):
    host, port = split_addr(addr, None)
    out = {"errors": [], "answers": {}}
    rng, h, ok = random.Random(1), hashlib.sha256(), 0
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"R")
        for i in range(rr):
            req = random.Random(i).randbytes(rng.randint(1, 64 << 10))
            writer.write(struct.pack("!I", len(req)) + req)
            await writer.drain()
            answer = await reader.readexactly(32)
            ok += answer == hashlib.sha256(req).digest()
            h.update(answer)
        writer.close()
        await writer.wait_closed()
    except Exception as e:
        out["errors"].append(err(e))
    out.update(exchanges_ok=ok, answers_sha256=h.hexdigest())
    payload = b"H" + random.Random(7).randbytes(HALFCLOSE_BYTES - 1)
    expected = f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"
    for _ in range(halfcloses):
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
            a = (await reader.read()).decode(errors="replace")
            writer.close()
            await writer.wait_closed()
        except Exception as e:
            a = err(e)
            out["errors"].append(a)
        out["answers"][a] = out["answers"].get(a, 0) + 1
    out["intact"] = out["answers"].get(expected, 0)
    return out


if __name__ == "__main__":
    role, where, rr, halfcloses = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    main = server(where, rr, halfcloses) if role == "server" else client(where, rr, halfcloses)
    out = asyncio.run(main)
    print(json.dumps({"event": "done", **out}, sort_keys=True), flush=True)
    sys.exit(1 if out["errors"] else 0)
