#!/usr/bin/env python3
"""Test-side SMC helper for the VM tests (runs in a pod netns via `ip netns exec`).

  smctool.py diag                         AF_SMC sockets of this netns (smc_diag) as JSON
  smctool.py serve PORT [--explicit]      echo one connection, report own smc_diag entry
  smctool.py client IP PORT BYTES [--explicit]
                                          send BYTES random bytes, check the echo, report
  smctool.py ueid add|del UEID            the node's UEID table, as an operator's `smcd ueid`
                                          would change it (meshaccel not involved)
Sockets are plain socket(AF_INET, SOCK_STREAM, 0) unless --explicit (IPPROTO_SMC), so a
converted pod shows SMC without the application knowing.
"""
import hashlib, json, os, socket, struct, sys

AF_SMC = 43
IPPROTO_SMC = 256
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 1, 0x300
MODES = {0: "SMCR", 1: "FALLBACK_TCP", 2: "SMCD"}
SMC_DIAG_FALLBACK = 5


def diag():
    """Every AF_SMC socket of the caller's netns: mode, ports, fallback reason."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    req = struct.pack("=BBBB", AF_SMC, 0, 0, 0xFF) + b"\0" * 48
    s.send(struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + req)
    out = []
    while True:
        data = s.recv(65536)
        off = 0
        while off < len(data):
            ln, typ, _, _, _ = struct.unpack_from("=IHHII", data, off)
            if typ == 3:  # NLMSG_DONE
                return out
            if typ == 2:
                raise OSError(-struct.unpack_from("=i", data, off + 16)[0], "smc_diag error")
            body = data[off + 16: off + ln]
            fam, state, mode, _ = struct.unpack_from("=BBBB", body, 0)
            sport, dport = struct.unpack_from(">HH", body, 4)
            e = {"state": state, "mode": MODES.get(mode, mode), "sport": sport, "dport": dport}
            a = 64
            while a + 4 <= len(body):
                alen, atype = struct.unpack_from("=HH", body, a)
                if alen < 4:
                    break
                if atype == SMC_DIAG_FALLBACK:
                    reason, peer = struct.unpack_from("=II", body, a + 4)
                    e["fallback"] = "0x%08x" % reason
                    e["peerDiagnosis"] = "0x%08x" % peer
                a += (alen + 3) & ~3
            out.append(e)
            off += (ln + 3) & ~3


def genl(family, cmd, attrs=b""):
    """One generic netlink request (resolving FAMILY through nlctrl); raises on a NACK."""
    def request(s, typ, cmd, attrs, seq):
        msg = struct.pack("=BBH", cmd, 1, 0) + attrs
        s.send(struct.pack("=IHHII", 16 + len(msg), typ, 1 | 4, seq, 0) + msg)  # REQUEST|ACK
        data = s.recv(65536)
        out = []
        off = 0
        while off < len(data):
            ln, t, _, _, _ = struct.unpack_from("=IHHII", data, off)
            if t == 2:  # NLMSG_ERROR: 0 is the ACK
                err = -struct.unpack_from("=i", data, off + 16)[0]
                if err:
                    raise OSError(err, os.strerror(err))
            else:
                out.append(data[off + 20: off + ln])
            off += (ln + 3) & ~3
        return out

    def attr(kind, value):
        a = struct.pack("=HH", 4 + len(value), kind) + value
        return a + b"\0" * (-len(a) % 4)

    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16)  # NETLINK_GENERIC
    reply = request(s, 0x10, 3, attr(2, family.encode() + b"\0"), 1)  # nlctrl GETFAMILY, NAME
    body, fid = reply[0], None
    while body:
        alen, kind = struct.unpack_from("=HH", body)
        if kind == 1:  # CTRL_ATTR_FAMILY_ID
            fid = struct.unpack_from("=H", body, 4)[0]
        body = body[(alen + 3) & ~3:]
    request(s, fid, cmd, attrs, 2)


def ueid(op, name):
    # SMC_GEN_NETLINK ADD_UEID=10 / REMOVE_UEID=11; SMC_NLA_EID_TABLE_ENTRY=1 is 32 blank
    # padded characters plus the NUL.
    genl("SMC_GEN_NETLINK", {"add": 10, "del": 11}[op],
         struct.pack("=HH", 37, 1) + name.ljust(32).encode() + b"\0" + b"\0" * 3)


def mine(port, local):
    """This connection's smc_diag entry (by local or remote port)."""
    for e in diag():
        if (e["sport"] if local else e["dport"]) == port and e["state"] != 10:  # not LISTEN
            return e
    return None


def sock(explicit):
    # Explicit SMC: socket(AF_INET, SOCK_STREAM, IPPROTO_SMC) (Linux >= 6.11); Python cannot
    # pass addresses for AF_SMC sockets, which are the same thing.
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SMC) if explicit else socket.socket()


def report(**kw):
    print(json.dumps(kw), flush=True)


def serve(port, explicit):
    ls = sock(explicit)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(4)
    report(event="listening")
    c, peer = ls.accept()
    h, n = hashlib.sha256(), 0
    while True:
        b = c.recv(1 << 16)
        if not b:
            break
        h.update(b)
        n += len(b)
        c.sendall(b)
    report(event="done", role="server", bytes=n, sha256=h.hexdigest(), diag=mine(port, True))
    c.close()
    ls.close()


def client(ip, port, nbytes, explicit):
    s = sock(explicit)
    s.settimeout(60)
    s.connect((ip, port))
    data = os.urandom(nbytes)
    sent, got, h = 0, 0, hashlib.sha256()
    chunk = 1 << 16
    while got < nbytes:
        if sent < nbytes:
            s.sendall(data[sent: sent + chunk])
            sent = min(nbytes, sent + chunk)
        while got < sent:
            b = s.recv(1 << 16)
            if not b:
                raise SystemExit("connection closed early")
            h.update(b)
            got += len(b)
    d = mine(port, False)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    ok = h.hexdigest() == hashlib.sha256(data).hexdigest()
    report(event="done", role="client", bytes=got, intact=ok, sha256=h.hexdigest(), diag=d)
    s.close()
    sys.exit(0 if ok else 1)


def main(a):
    explicit = "--explicit" in a
    a = [x for x in a if x != "--explicit"]
    if a[0] == "diag":
        print(json.dumps(diag()))
    elif a[0] == "serve":
        serve(int(a[1]), explicit)
    elif a[0] == "client":
        client(a[1], int(a[2]), int(a[3]), explicit)
    elif a[0] == "ueid":
        ueid(a[1], a[2])
    elif a[0] == "hold":  # a plain socket() that stays open, for conversion checks
        s = sock(explicit)
        report(event="open")
        sys.stdin.read()
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
