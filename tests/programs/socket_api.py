#!/usr/bin/env python3
"""One socket-API case on one TCP connection, as seen by one end.

    socket_api.py server|client CASE blocking|nonblocking HOST:PORT

nonblocking: every socket is O_NONBLOCK from creation (listener from listen(), accepted
socket before any I/O) and waits with poll/epoll, as event-driven programs do.
blocking: plain blocking sockets.

stdout, JSON lines: {"event":"listening"} (server), {"event":"sync","tag":T} (then waits
for a stdin line "go": the test releases both ends of a barrier together; any other line
aborts the case), {"event":"result","obs":{...}} with what this end observed, then
{"event":"done"}. Observations are values, byte strings (short ones as text, long ones as
length and digest) and errno names; nothing timing-dependent.
"""
import errno, fcntl, hashlib, json, os, select, signal, socket, struct, sys, tempfile, termios, time

ROLE, CASE, MODE, ADDR = sys.argv[1:5]
NB = MODE == "nonblocking"
SIOCINQ, SIOCOUTQ, SIOCATMARK, SIOCOUTQNSD = termios.FIONREAD, termios.TIOCOUTQ, 0x8905, 0x894B
EV = {"IN": select.POLLIN, "PRI": select.POLLPRI, "OUT": select.POLLOUT, "ERR": select.POLLERR,
      "HUP": select.POLLHUP, "RDHUP": select.POLLRDHUP}
ALL = select.POLLIN | select.POLLPRI | select.POLLOUT | select.POLLRDHUP
SETTLE = 0.05  # after a barrier: lets plain TCP's softirq finish delivering what was sent
STALL = 5.0  # a wait that long for data that was sent means it never arrives


class Abort(Exception):
    pass


def emit(event, **kw):
    print(json.dumps({"event": event, **kw}), flush=True)


def sync(tag):
    emit("sync", tag=tag)
    if sys.stdin.readline().strip() != "go":
        raise Abort(tag)


def ename(e):
    return errno.errorcode.get(e.errno, str(e.errno))


def attempt(f):
    try:
        return show(f())
    except OSError as e:
        return ename(e)


def show(v):
    if isinstance(v, bytes):
        return v.decode("latin1") if len(v) <= 64 else digest(v)
    return v


def digest(b):
    return {"len": len(b), "sha256": hashlib.sha256(b).hexdigest()[:16]}


def names(mask):
    return sorted(n for n, m in EV.items() if mask & m)


def revents(s, timeout=0.0, mask=ALL):
    p = select.poll()
    p.register(s, mask)
    r = p.poll(int(timeout * 1000))
    return names(r[0][1]) if r else []


def wait_in(s, timeout=STALL):
    """Waits until readable (or error/hangup); then lets the rest of a burst arrive."""
    ok = bool(revents(s, timeout, select.POLLIN))
    time.sleep(SETTLE)
    return ok


def ioctl_int(s, req):
    try:
        return struct.unpack("i", fcntl.ioctl(s.fileno(), req, b"\0" * 4))[0]
    except OSError as e:
        return ename(e)


def payload(n, seed=1):
    out, i = bytearray(), 0
    while len(out) < n:
        out += hashlib.sha256(b"%d-%d" % (seed, i)).digest()
        i += 1
    return bytes(out[:n])


def send_all(s, data, flags=0):
    """Sends everything; non-blocking: EAGAIN waits for POLLOUT."""
    view, sent = memoryview(data), 0
    while sent < len(data):
        try:
            sent += s.send(view[sent:], flags)
        except BlockingIOError:
            if not revents(s, STALL, select.POLLOUT):
                return "stalled"
    return sent


def read_until(s, n=None, flags=0):
    """Reads n bytes, or to EOF: {data digest, end: eof|full|stalled|ERRNO}."""
    buf, end, deadline = bytearray(), None, time.monotonic() + STALL
    while end is None:
        if n is not None and len(buf) >= n:
            end = "full"
            break
        if NB and not revents(s, max(0.0, deadline - time.monotonic()), select.POLLIN):
            end = "stalled"
            break
        try:
            chunk = s.recv(65536 if n is None else n - len(buf), flags)
        except BlockingIOError:  # readable per poll, yet nothing to read
            if time.monotonic() > deadline:
                end = "stalled"
            time.sleep(0.001)
            continue
        except OSError as e:
            end = ename(e)
            break
        if not chunk:
            end = "eof"
        buf += chunk
    return {**digest(bytes(buf)), "end": end}


def count_events(ep, window=0.3):
    """Events epoll reports within `window` (edge-triggered: one per wake-up)."""
    n, deadline = 0, time.monotonic() + window
    while (left := deadline - time.monotonic()) > 0:
        n += len(ep.poll(left))
    return n


def ep_names(ep, timeout=0.0):
    r = ep.poll(timeout)
    return names(r[0][1]) if r else []


# Each case: (server, client), each f(sock, obs) filling obs.

def peek_srv(s, o):
    sync("sent")
    wait_in(s)
    o["peek5"] = attempt(lambda: s.recv(5, socket.MSG_PEEK))
    o["peek_all"] = attempt(lambda: s.recv(64, socket.MSG_PEEK))
    o["read"] = attempt(lambda: s.recv(64))
    o["peek_matches_read"] = o["peek_all"] == o["read"]
    o["then"] = attempt(lambda: s.recv(64, socket.MSG_DONTWAIT))


def peek_cli(s, o):
    o["sent"] = send_all(s, b"peek-payload-0123456789")
    sync("sent")


def waitall_srv(s, o):
    if NB:  # nothing there: a non-blocking MSG_WAITALL does not wait
        o["empty"] = attempt(lambda: s.recv(3000, socket.MSG_WAITALL))
    sync("checked")
    sync("one")
    if NB:  # returns what is there, not waiting for the rest
        wait_in(s)
        o["first"] = attempt(lambda: s.recv(3000, socket.MSG_WAITALL))
        sync("more")
        sync("sent")
        wait_in(s)
        o["rest"] = attempt(lambda: s.recv(3000, socket.MSG_WAITALL))
    else:  # waits for all 3000, across the peer's delayed sends
        sync("more")
        o["all"] = attempt(lambda: s.recv(3000, socket.MSG_WAITALL))
        sync("sent")
    o["then"] = attempt(lambda: s.recv(100, socket.MSG_DONTWAIT))


def waitall_cli(s, o):
    data = payload(3000)
    sync("checked")
    send_all(s, data[:1000])
    sync("one")
    sync("more")
    send_all(s, data[1000:2000])
    time.sleep(0.2)
    send_all(s, data[2000:])
    sync("sent")


def dontwait_srv(s, o):
    o["empty"] = attempt(lambda: s.recv(100, socket.MSG_DONTWAIT))
    sync("ready")
    sync("sent")
    wait_in(s)
    o["data"] = attempt(lambda: s.recv(100, socket.MSG_DONTWAIT))
    o["then"] = attempt(lambda: s.recv(100, socket.MSG_DONTWAIT))


def dontwait_cli(s, o):
    sync("ready")
    o["send"] = attempt(lambda: s.send(b"dontwait!!", socket.MSG_DONTWAIT))
    sync("sent")


def fionread_srv(s, o):
    o["inq_before"] = ioctl_int(s, SIOCINQ)
    sync("ready")
    sync("sent")
    o["readable"] = wait_in(s)
    o["inq"] = ioctl_int(s, SIOCINQ)
    o["read100"] = attempt(lambda: len(s.recv(100)))
    o["inq_after_100"] = ioctl_int(s, SIOCINQ)
    o["rest"] = read_until(s, 1134)
    o["inq_drained"] = ioctl_int(s, SIOCINQ)


def fionread_cli(s, o):
    data = payload(1234)
    sync("ready")
    send_all(s, data[:1000])
    send_all(s, data[1000:])
    sync("sent")


def siocoutq_cli(s, o):
    o["outq_before"] = ioctl_int(s, SIOCOUTQ)
    o["sent"] = send_all(s, payload(5000))
    deadline = time.monotonic() + 2.0  # until acknowledged (plain) / at once (redirected)
    while ioctl_int(s, SIOCOUTQ) != 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    o["outq_settled"] = ioctl_int(s, SIOCOUTQ)
    o["outqnsd_settled"] = ioctl_int(s, SIOCOUTQNSD)
    sync("sent")
    sync("read")
    o["outq_after_read"] = ioctl_int(s, SIOCOUTQ)


def siocoutq_srv(s, o):
    o["outq_receiver"] = ioctl_int(s, SIOCOUTQ)
    sync("sent")
    o["read"] = read_until(s, 5000)
    sync("read")


def oob_srv(s, o):
    sync("sent")
    wait_in(s)
    o["ready"] = revents(s, 0, select.POLLIN | select.POLLPRI)
    o["atmark_before"] = ioctl_int(s, SIOCATMARK)
    o["oob"] = attempt(lambda: s.recv(1, socket.MSG_OOB))
    o["reads"] = []
    for _ in range(4):  # inline data: plain TCP stops a read at the urgent mark
        r = attempt(lambda: s.recv(100, socket.MSG_DONTWAIT))
        o["reads"].append([r, ioctl_int(s, SIOCATMARK)])
        if r == "EAGAIN":
            break


def oob_cli(s, o):
    o["sent"] = [send_all(s, b"abc"), attempt(lambda: s.send(b"!", socket.MSG_OOB)), send_all(s, b"def")]
    sync("sent")


def shutdown_rd_srv(s, o):
    s.shutdown(socket.SHUT_RD)
    o["ready"] = revents(s)
    o["read"] = attempt(lambda: s.recv(100))
    sync("shut")
    sync("sent")
    time.sleep(SETTLE)
    o["ready_after_peer_wrote"] = revents(s)
    o["read_after_peer_wrote"] = attempt(lambda: s.recv(100))
    o["read_again"] = attempt(lambda: s.recv(100))
    o["write"] = attempt(lambda: s.send(b"still writable"))
    sync("answered")


def shutdown_rd_cli(s, o):
    sync("shut")
    o["write"] = attempt(lambda: s.send(b"hello after SHUT_RD"))
    sync("sent")
    sync("answered")
    wait_in(s)
    o["read"] = attempt(lambda: s.recv(100))


def linger_rst_srv(s, o):
    o["request"] = read_until(s, 100)
    o["answer"] = send_all(s, payload(100, 2))
    sync("talked")
    sync("closed")
    wait_in(s, 2.0)
    o["ready"] = revents(s)
    o["read"] = attempt(lambda: s.recv(100))
    o["read_again"] = attempt(lambda: s.recv(100))
    o["write"] = attempt(lambda: s.send(b"x"))


def linger_rst_cli(s, o):
    send_all(s, payload(100))
    o["answer"] = read_until(s, 100)
    sync("talked")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    sync("closed")


def sendfile_srv(s, o):
    o["received"] = read_until(s)
    o["intact"] = o["received"]["sha256"] == digest(payload(300_000, 7))["sha256"]
    sync("end")


def sendfile_cli(s, o):
    with tempfile.TemporaryFile() as f:
        f.write(payload(300_000, 7))
        f.flush()
        off = 0
        while off < 300_000:
            try:
                off += os.sendfile(s.fileno(), f.fileno(), off, 300_000 - off)
            except BlockingIOError:
                if not revents(s, STALL, select.POLLOUT):
                    break
            except OSError as e:
                o["error"] = ename(e)
                break
    o["sent"] = off
    s.shutdown(socket.SHUT_WR)
    sync("end")


def splice_into(s, want=None):
    """os.splice socket -> pipe until `want` bytes, EOF, an error or a stall."""
    r, w = os.pipe()
    buf, end, deadline = bytearray(), None, time.monotonic() + STALL
    flags = os.SPLICE_F_NONBLOCK if NB else 0
    while end is None and (want is None or len(buf) < want):
        if NB and not revents(s, max(0.0, deadline - time.monotonic()), select.POLLIN):
            end = "stalled"
            break
        try:
            n = os.splice(s.fileno(), w, 65536, flags=flags)
        except BlockingIOError:  # readable per poll, yet nothing to splice
            if time.monotonic() > deadline:
                end = "stalled"
            time.sleep(0.001)
            continue
        except OSError as e:
            end = ename(e)
            break
        if n == 0:
            end = "eof"
        while n > 0:
            chunk = os.read(r, n)
            buf += chunk
            n -= len(chunk)
    os.close(r)
    os.close(w)
    return bytes(buf), end or "full"


def splice_srv(s, o):
    sync("sent")
    data, end = splice_into(s, 100_000)  # before the peer's FIN
    o["spliced"] = {**digest(data), "end": end, "intact": data == payload(100_000, 8)}
    sync("spliced")
    sync("shut")
    data, end = splice_into(s)  # to EOF
    o["spliced_to_eof"] = {**digest(data), "end": end}
    o["recv_after_eof"] = read_until(s)  # anything splice did not see


def splice_cli(s, o):
    data = payload(100_000, 8)
    o["sent"] = sum(send_all(s, data[i:i + 4000]) for i in range(0, len(data), 4000))
    sync("sent")
    sync("spliced")
    s.shutdown(socket.SHUT_WR)
    sync("shut")


def poll_epoll_srv(s, o):
    ep = select.epoll()
    ep.register(s.fileno(), ALL)
    o["initial"] = ep_names(ep)
    sync("start")
    sync("sent")
    time.sleep(SETTLE)
    o["data_arrived"] = ep_names(ep, 1.0)
    o["read"] = attempt(lambda: s.recv(100))
    o["drained"] = ep_names(ep)
    sync("seen")
    sync("shut")
    time.sleep(SETTLE)
    o["peer_shut_wr"] = ep_names(ep, 1.0)
    o["eof"] = attempt(lambda: s.recv(100))
    o["after_eof"] = ep_names(ep)
    s.shutdown(socket.SHUT_WR)
    time.sleep(SETTLE)
    o["both_closed"] = ep_names(ep)
    sync("srvshut")


def poll_epoll_cli(s, o):
    o["initial"] = revents(s)
    sync("start")
    send_all(s, b"0123456789")
    sync("sent")
    sync("seen")
    s.shutdown(socket.SHUT_WR)
    o["own_shut_wr"] = revents(s)
    sync("shut")
    sync("srvshut")
    time.sleep(SETTLE)
    o["both_closed"] = revents(s, 1.0)
    o["eof"] = attempt(lambda: s.recv(100))


def epollet_srv(s, o):
    ep = select.epoll()
    ep.register(s.fileno(), select.EPOLLIN | select.EPOLLET)
    o["initial"] = count_events(ep)
    sync("registered")
    sync("burst1")
    time.sleep(SETTLE)
    o["burst1"] = count_events(ep)
    o["read_part"] = attempt(lambda: len(s.recv(100)))
    o["unread_left_no_event"] = count_events(ep)
    sync("read1")
    sync("burst2")
    time.sleep(SETTLE)
    o["burst2"] = count_events(ep)
    o["rest"] = read_until(s, 400)
    o["drained"] = count_events(ep)


def epollet_cli(s, o):
    sync("registered")
    for _ in range(3):
        send_all(s, b"e" * 100)
    sync("burst1")
    sync("read1")
    for _ in range(2):
        send_all(s, b"f" * 100)
    sync("burst2")


def close_unread_srv(s, o):
    sync("sent")
    o["readable"] = wait_in(s)
    s.close()  # 100 bytes unread
    sync("closed")


def close_after_read_srv(s, o):
    sync("sent")
    o["read"] = read_until(s, 100)
    s.close()
    sync("closed")


def close_cli(s, o):
    send_all(s, payload(100))
    sync("sent")
    sync("closed")
    wait_in(s, 2.0)
    o["ready"] = revents(s)
    o["read"] = attempt(lambda: s.recv(100))
    o["read_again"] = attempt(lambda: s.recv(100))


def rcvtimeo_srv(s, o):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 300_000))
    t = time.monotonic()
    o["read"] = attempt(lambda: s.recv(100))
    o["waited_the_timeout"] = 0.25 < time.monotonic() - t < 3.0
    sync("timed")
    sync("sent")
    o["read_later"] = attempt(lambda: s.recv(100))


def rcvtimeo_cli(s, o):
    sync("timed")
    send_all(s, b"late")
    sync("sent")


def sndtimeo_srv(s, o):
    sync("full")
    o["drained"] = read_until(s)["end"]


def sndtimeo_cli(s, o):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 300_000))
    chunk, total = payload(65536), 0
    while total < 256 << 20:
        t = time.monotonic()
        try:
            n = s.send(chunk)
        except OSError as e:
            o["end"] = ename(e)
            break
        total += n  # a partial send (timed out after some progress): the next one fails
    else:
        o["end"] = "never blocked"
    o["waited_the_timeout"] = 0.25 < time.monotonic() - t < 3.0
    s.shutdown(socket.SHUT_WR)
    sync("full")


CASES = {
    "peek": (peek_srv, peek_cli),
    "waitall": (waitall_srv, waitall_cli),
    "dontwait": (dontwait_srv, dontwait_cli),
    "fionread": (fionread_srv, fionread_cli),
    "siocoutq": (siocoutq_srv, siocoutq_cli),
    "oob": (oob_srv, oob_cli),
    "shutdown_rd": (shutdown_rd_srv, shutdown_rd_cli),
    "linger_rst": (linger_rst_srv, linger_rst_cli),
    "sendfile": (sendfile_srv, sendfile_cli),
    "splice": (splice_srv, splice_cli),
    "poll_epoll": (poll_epoll_srv, poll_epoll_cli),
    "epollet": (epollet_srv, epollet_cli),
    "close_unread": (close_unread_srv, close_cli),
    "close_after_read": (close_after_read_srv, close_cli),
    "rcvtimeo": (rcvtimeo_srv, rcvtimeo_cli),
    "sndtimeo": (sndtimeo_srv, sndtimeo_cli),
}


def connect():
    host, port = ADDR.rsplit(":", 1)
    # "[v6]:port" is IPv6, "a.b.c.d:port" IPv4.
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    host = host.strip("[]")
    kind = socket.SOCK_STREAM | (socket.SOCK_NONBLOCK if NB else 0)
    if ROLE == "server":
        ls = socket.socket(family, kind)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((host, int(port)))
        ls.listen(8)
        emit("listening")
        if NB and not revents(ls, 30, select.POLLIN):
            raise TimeoutError("no connection")
        s, _ = ls.accept()  # accept4 without SOCK_NONBLOCK: made non-blocking before any I/O
        s.setblocking(not NB)
        return s, ls
    s = socket.socket(family, kind)
    if NB:
        rc = s.connect_ex((host, int(port)))
        if rc != errno.EINPROGRESS or not revents(s, 30, select.POLLOUT):
            raise OSError(rc, "connect")
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, "connect")
    else:
        s.connect((host, int(port)))
    return s, None


def main():
    obs = {}

    def finish(**extra):
        emit("result", obs={**obs, **extra})
        emit("done")
        sys.stdout.flush()
        os._exit(0)

    signal.signal(signal.SIGALRM, lambda *_: finish(hung=True))
    signal.alarm(40)
    s, _listener = connect()  # the listener stays open for the whole case
    try:
        sync("start")  # both ends connected, nothing sent yet
        CASES[CASE][ROLE == "client"](s, obs)
        sync("end")  # nothing the case observes depends on the peer exiting (closing)
    except Abort as a:
        finish(aborted_at=str(a))
    finish()


main()
