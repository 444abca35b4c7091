//! Test traffic. A server accepts `--conns` connections, a client opens `--conns`; only when
//! all are established (and, with `--wait-go`, a `go` line arrived on stdin) does each
//! connection's handler start, in its own thread. Every handler returns a report; `done`
//! carries them all and the list of errors.
//!
//! Streams: connection `i` of a `verify` client sends `random(seed + i)` (or its tag
//! `tag-base + i` repeated) and expects it echoed back; `send` clients send `random(seed)`
//! on every connection, which `sink`, `halfclose` and `rst` servers check.
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meshaccel_tests::payload::Stream;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
use serde_json::{json, Map, Value};

/// `serve`: accepts `--conns` connections on `--listen`.
#[derive(clap::Args, Debug)]
pub struct Serve {
    /// Where to listen (`[::]:PORT` listens dual-stack).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    #[arg(long, value_enum)]
    mode: ServeMode,
    /// With `--mode echo`: the inclusive range of tags the connections may carry.
    #[arg(long = "expect-tags", value_name = "MIN..MAX", value_parser = tag_range)]
    expect_tags: Option<(u64, u64)>,
    #[command(flatten)]
    common: Common,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ServeMode {
    /// Echo everything back.
    Echo,
    /// Read `random(seed)` to EOF and check it.
    Sink,
    /// Read the client's stream to EOF, then answer with `random(seed + 1)` and close.
    Halfclose,
    /// Read slowly (`--delay-ms`, `--ack-after`) and record how the client's reset ends it.
    Rst,
}

/// `client`: opens `--conns` connections to `--connect`.
#[derive(clap::Args, Debug)]
pub struct Client {
    /// Where to connect.
    #[arg(long, value_name = "ADDR")]
    connect: SocketAddr,
    #[arg(long, value_enum)]
    mode: ClientMode,
    /// Connect connection `i` from local port `PORT + i` (identical tuples in two pods).
    #[arg(long = "bind-port", value_name = "PORT")]
    bind_port: Option<u16>,
    #[command(flatten)]
    common: Common,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ClientMode {
    /// Send `random(seed + i)` (or the tag `tag-base + i`) and check the echo.
    Verify,
    /// Send `random(seed)` on every connection.
    Send,
    /// Send, shut down the sending side, read the server's answer.
    Halfclose,
    /// Send, then close with SO_LINGER 0 (a reset).
    Rst,
}

/// The options of both ends.
#[derive(clap::Args, Debug)]
struct Common {
    /// Connections.
    #[arg(long, value_name = "N", default_value_t = 1)]
    conns: u16,
    /// Bytes of every stream.
    #[arg(long, value_name = "N", default_value_t = 1 << 20)]
    bytes: u64,
    /// Seed of the random streams.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Connection `i` of a verify client sends its tag `N + i` repeated instead of random bytes.
    #[arg(long = "tag-base", value_name = "N")]
    tag_base: Option<u64>,
    #[arg(long, value_enum, default_value_t = Io::Blocking)]
    io: Io,
    /// rst: the server acknowledges with one byte after N bytes, the client waits for it.
    #[arg(long = "ack-after", value_name = "N")]
    ack_after: Option<u64>,
    /// Every write N bytes (1 to 262144; default: a cycle of sizes from 1 B to 256 KiB).
    #[arg(long = "write-size", value_name = "N")]
    write_size: Option<usize>,
    /// rst: how long each end waits before reading (server) or resetting (client).
    #[arg(long = "delay-ms", value_name = "MS", default_value_t = 0)]
    delay_ms: u64,
    /// Read timeout, and how long --io poll waits for a socket to become ready.
    #[arg(long = "timeout-ms", value_name = "MS", default_value_t = 30_000)]
    timeout_ms: u64,
    /// Print `ready` once every connection is up, then wait for `go` on stdin.
    #[arg(long = "wait-go")]
    wait_go: bool,
    /// Report `stalled` when no byte was written for this long (0: never).
    #[arg(long = "stall-ms", value_name = "MS", default_value_t = 0)]
    stall_ms: u64,
    /// Sleep this long after every cycle of write sizes (every write with --write-size): a
    /// slow sender, so that a stream outlasts what happens to the node meanwhile.
    #[arg(long = "pause-ms", value_name = "MS", default_value_t = 0)]
    pause_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
enum Io {
    /// Every error reaches the caller as it is.
    Blocking,
    /// Non-blocking sockets, waiting in poll() on EAGAIN, as event-driven programs do.
    Poll,
}

/// `MIN..MAX`.
fn tag_range(s: &str) -> Result<(u64, u64), String> {
    let (lo, hi) = s.split_once("..").ok_or("want MIN..MAX")?;
    Ok((lo.parse().map_err(|e| format!("{lo:?}: {e}"))?, hi.parse().map_err(|e| format!("{hi:?}: {e}"))?))
}

#[derive(Clone)]
struct Opts {
    bytes: u64,
    seed: u64,
    tag_base: Option<u64>,
    /// Inclusive range of tags an echo server accepts.
    expect_tags: Option<(u64, u64)>,
    /// `--io poll`: non-blocking sockets, waiting in poll() on EAGAIN, as event-driven
    /// programs do. Default `--io blocking`: every error reaches the caller as it is.
    poll: bool,
    ack_after: Option<u64>,
    /// `--write-size N`: every write N bytes (default: a cycle of sizes from 1 B to 256 KiB).
    write_size: Option<usize>,
    delay: Duration,
    timeout: Duration,
    /// `--pause-ms`.
    pause: Duration,
    /// Bytes written by all connections so far (for stall detection).
    progress: Arc<AtomicU64>,
}

impl Opts {
    fn new(c: &Common, expect_tags: Option<(u64, u64)>) -> Self {
        Self {
            bytes: c.bytes,
            seed: c.seed,
            tag_base: c.tag_base,
            expect_tags,
            poll: c.io == Io::Poll,
            ack_after: c.ack_after,
            write_size: c.write_size.map(|n| n.clamp(1, 262_144)),
            delay: Duration::from_millis(c.delay_ms),
            timeout: Duration::from_millis(c.timeout_ms),
            pause: Duration::from_millis(c.pause_ms),
            progress: Arc::default(),
        }
    }
}

/// What one connection's handler observed.
#[derive(Default)]
struct Report {
    fields: Map<String, Value>,
    errors: Vec<String>,
}

impl Report {
    fn set(&mut self, key: &str, v: impl Into<Value>) {
        self.fields.insert(key.into(), v.into());
    }

    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors.push(e.to_string());
    }
}

fn emit(v: Value) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn errno_name(e: &io::Error) -> String {
    e.raw_os_error().map_or_else(|| e.to_string(), |n| format!("{:?}", Errno::from_raw(n)))
}

fn wait_go() -> Result<()> {
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "go" {
        bail!("expected `go` on stdin, got {line:?}");
    }
    Ok(())
}

pub fn serve(a: &Serve) -> Result<()> {
    let opts = Opts::new(&a.common, a.expect_tags);
    let conns = usize::from(a.common.conns);
    // `[::]` listens dual-stack: IPv4 clients arrive as v4-mapped IPv6 sockets.
    let listener = TcpListener::bind(a.listen)?;
    // Event-driven servers accept from a non-blocking listener, and meshaccel judges an
    // accepted socket by its listener's mode (docs/design.md).
    listener.set_nonblocking(opts.poll)?;
    emit(json!({"event": "listening", "addr": listener.local_addr()?.to_string()}));
    let streams: Vec<TcpStream> = (0..conns).map(|_| accept(&listener, &opts)).collect::<Result<_>>()?;
    emit(json!({"event": "accepted", "conns": conns}));
    let handler: fn(TcpStream, usize, &Opts) -> Report = match a.mode {
        ServeMode::Echo => echo,
        ServeMode::Sink => sink,
        ServeMode::Halfclose => serve_halfclose,
        ServeMode::Rst => serve_rst,
    };
    run_handlers(&a.common, streams, &opts, handler)
}

pub fn client(a: &Client) -> Result<()> {
    let opts = Opts::new(&a.common, None);
    let conns = a.common.conns;
    let streams =
        (0..conns).map(|i| connect(a.connect, a.bind_port.map(|p| p + i), &opts)).collect::<Result<Vec<_>>>()?;
    emit(json!({"event": "connected", "conns": conns}));
    let handler: fn(TcpStream, usize, &Opts) -> Report = match a.mode {
        ClientMode::Verify => verify,
        ClientMode::Send => send,
        ClientMode::Halfclose => client_halfclose,
        ClientMode::Rst => client_rst,
    };
    run_handlers(&a.common, streams, &opts, handler)
}

/// Accepts one connection; with `--io poll` from the non-blocking listener, in poll().
fn accept(listener: &TcpListener, opts: &Opts) -> Result<TcpStream> {
    loop {
        match listener.accept() {
            Ok((s, _)) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_ready(listener.as_fd(), PollFlags::POLLIN, opts, "accept")?
            }
            Err(e) => return Err(e).context("accept"),
        }
    }
}

/// Waits in poll() until `fd` is ready for `want`, within the timeout.
fn wait_ready(fd: std::os::fd::BorrowedFd, want: PollFlags, opts: &Opts, what: &str) -> Result<()> {
    let mut fds = [PollFd::new(fd, want)];
    let ms = PollTimeout::try_from(opts.timeout.as_millis().min(i32::MAX as u128) as i32)?;
    if poll(&mut fds, ms)? == 0 {
        bail!("{what}: not ready within {:?}", opts.timeout);
    }
    Ok(())
}

/// Connects, from a fixed local port when given (to make identical tuples in two pods).
/// With `--io poll` the socket is non-blocking from the start, as event-driven programs
/// connect (EINPROGRESS, then POLLOUT).
fn connect(addr: SocketAddr, local_port: Option<u16>, opts: &Opts) -> Result<TcpStream> {
    use std::os::fd::AsRawFd;
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let flags = if opts.poll { SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK } else { SockFlag::SOCK_CLOEXEC };
    let fd = socket::socket(family, SockType::Stream, flags, None)?;
    if let Some(port) = local_port {
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        let local = SocketAddr::new(if addr.is_ipv4() { "0.0.0.0".parse()? } else { "::".parse()? }, port);
        socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(local)).with_context(|| format!("bind {local}"))?;
    }
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Err(Errno::EINPROGRESS) => {
            wait_ready(fd.as_fd(), PollFlags::POLLOUT, opts, "connect")?;
            match socket::getsockopt(&fd, sockopt::SocketError)? {
                0 => {}
                e => return Err(Errno::from_raw(e)).with_context(|| format!("connect {addr}")),
            }
        }
        r => r.with_context(|| format!("connect {addr}"))?,
    }
    Ok(TcpStream::from(fd))
}

/// Runs the handlers, reports stalls of the writers (`--stall-ms`: no byte written for that
/// long) while they run, and prints `done`.
fn run_handlers(
    a: &Common,
    streams: Vec<TcpStream>,
    opts: &Opts,
    handler: fn(TcpStream, usize, &Opts) -> Report,
) -> Result<()> {
    if a.wait_go {
        emit(json!({"event": "ready"}));
        wait_go()?;
    }
    for s in &streams {
        s.set_read_timeout(Some(opts.timeout))?;
        s.set_nonblocking(opts.poll)?;
    }
    let handles: Vec<JoinHandle<Report>> = streams
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let opts = opts.clone();
            thread::spawn(move || handler(s, i, &opts))
        })
        .collect();
    let stall = a.stall_ms;
    let (mut last, mut since, mut reported) = (0, Instant::now(), false);
    while stall > 0 && !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(Duration::from_millis(20));
        let now = opts.progress.load(Ordering::Relaxed);
        if now != last {
            (last, since, reported) = (now, Instant::now(), false);
        } else if !reported && since.elapsed() >= Duration::from_millis(stall) {
            emit(json!({"event": "stalled", "written": now}));
            reported = true;
        }
    }
    let mut errors = vec![];
    let reports: Vec<Value> = handles
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            let r =
                h.join().unwrap_or_else(|_| Report { errors: vec!["handler panicked".into()], ..Report::default() });
            errors.extend(r.errors.iter().map(|e| format!("conn {i}: {e}")));
            Value::Object(r.fields)
        })
        .collect();
    emit(json!({"event": "done", "conns": reports, "errors": errors}));
    Ok(())
}

/// Runs a read or write; with `--io poll`, an EAGAIN waits in poll() for `want` and retries
/// (counted in `waits`). A poll without readiness within the timeout is a `TimedOut` error.
fn retry(
    s: &TcpStream,
    opts: &Opts,
    want: PollFlags,
    waits: &mut u64,
    mut op: impl FnMut() -> io::Result<usize>,
) -> io::Result<usize> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && opts.poll => {
                *waits += 1;
                let mut fds = [PollFd::new(s.as_fd(), want)];
                let ms = PollTimeout::try_from(opts.timeout.as_millis() as i32).unwrap();
                if poll(&mut fds, ms)? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no {want:?} within {:?}", opts.timeout),
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

fn read(s: &mut TcpStream, opts: &Opts, buf: &mut [u8]) -> io::Result<usize> {
    let mut r = &*s;
    retry(s, opts, PollFlags::POLLIN, &mut 0, || r.read(buf))
}

fn write_all(s: &mut TcpStream, opts: &Opts, mut buf: &[u8]) -> io::Result<()> {
    let mut w = &*s;
    while !buf.is_empty() {
        let n = retry(s, opts, PollFlags::POLLOUT, &mut 0, || w.write(buf))?;
        buf = &buf[n..];
    }
    Ok(())
}

/// Reads until EOF or an error, checking every byte against `stream`; `after_read` runs with
/// the running total after each read. Records `received`, `read_end` ("eof" or the errno).
fn receive(
    s: &mut TcpStream,
    stream: &Stream,
    opts: &Opts,
    r: &mut Report,
    mut after_read: impl FnMut(&mut TcpStream, u64),
) -> String {
    let (mut buf, mut scratch, mut n) = (vec![0; 256 * 1024], vec![], 0u64);
    let mut mismatch = None;
    let end = loop {
        match read(s, opts, &mut buf) {
            Ok(0) => break "eof".to_string(),
            Ok(k) => {
                mismatch = mismatch.or_else(|| stream.first_mismatch(n, &buf[..k], &mut scratch));
                n += k as u64;
                after_read(s, n);
            }
            Err(e) => break errno_name(&e),
        }
    };
    if let Some(at) = mismatch {
        r.error(format!("received data differs from what was sent, first at byte {at}"));
    }
    r.set("received", n);
    r.set("read_end", end.clone());
    end
}

/// Writes `bytes` of `stream` in writes of varying sizes. Records `written` and `eagains`
/// (with `--io poll`, each EAGAIN was followed by POLLOUT, or this failed).
fn transmit(s: &mut TcpStream, stream: &Stream, opts: &Opts, r: &mut Report) -> Result<()> {
    const SIZES: [usize; 8] = [1, 17, 512, 1448, 4096, 16384, 65536, 262_144];
    let fixed = opts.write_size.map(|n| [n]);
    let sizes: &[usize] = fixed.as_ref().map_or(&SIZES, |f| f);
    let (mut buf, mut off, mut eagains) = (vec![0; 262_144], 0u64, 0u64);
    let mut w = &*s;
    let result = (|| {
        for size in sizes.iter().cycle() {
            let n = (*size as u64).min(opts.bytes - off) as usize;
            if n == 0 {
                return Ok(());
            }
            stream.fill(off, &mut buf[..n]);
            let mut sent = 0;
            while sent < n {
                let k = retry(s, opts, PollFlags::POLLOUT, &mut eagains, || w.write(&buf[sent..n]))
                    .map_err(|e| anyhow::anyhow!("write at byte {}: {}", off + sent as u64, errno_name(&e)))?;
                sent += k;
                opts.progress.fetch_add(k as u64, Ordering::Relaxed);
            }
            off += n as u64;
            if !opts.pause.is_zero() && std::ptr::eq(size, &sizes[sizes.len() - 1]) {
                thread::sleep(opts.pause);
            }
        }
        Ok(())
    })();
    r.set("written", off);
    r.set("eagains", eagains);
    result
}

fn verify(mut s: TcpStream, i: usize, opts: &Opts) -> Report {
    let mut r = Report::default();
    let (mut w, o) = (s.try_clone().expect("clone socket"), opts.clone());
    let writer = thread::spawn(move || {
        let mut r = Report::default();
        if let Err(e) = transmit(&mut w, &make_stream(&o, i), &o, &mut r) {
            r.error(format!("{e:#}"));
        }
        let _ = w.shutdown(Shutdown::Write);
        r
    });
    let started = Instant::now();
    let end = receive(&mut s, &make_stream(opts, i), opts, &mut r, |_, _| {});
    let (got, ms) = (r.fields["received"].clone(), started.elapsed().as_millis());
    if end != "eof" {
        r.error(format!("reading the echo failed with {end} after {got} of {} bytes, {ms} ms in", opts.bytes));
    } else if got != opts.bytes {
        r.error(format!("sent {} bytes, {got} came back", opts.bytes));
    }
    let w = writer.join().unwrap_or_default();
    r.errors.extend(w.errors);
    r.fields.extend(w.fields);
    r
}

/// The stream connection `i` of a `verify` client sends.
fn make_stream(opts: &Opts, i: usize) -> Stream {
    opts.tag_base.map_or_else(|| Stream::random(opts.seed + i as u64), |t| Stream::Tag(t + i as u64))
}

fn send(mut s: TcpStream, _: usize, opts: &Opts) -> Report {
    let mut r = Report::default();
    if let Err(e) = transmit(&mut s, &Stream::random(opts.seed), opts, &mut r) {
        r.error(format!("{e:#}"));
    }
    let _ = s.shutdown(Shutdown::Write);
    r
}

/// Echoes everything back; with `--expect-tags`, also checks that the connection carries
/// one tag from the range only (anything else was delivered to the wrong socket).
fn echo(mut s: TcpStream, _: usize, opts: &Opts) -> Report {
    let mut r = Report::default();
    let (mut buf, mut n, mut tag, mut pending) = (vec![0; 256 * 1024], 0u64, None, Vec::new());
    loop {
        let k = match read(&mut s, opts, &mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) => {
                r.error(format!("read at byte {n}: {}", errno_name(&e)));
                break;
            }
        };
        if let Some((lo, hi)) = opts.expect_tags {
            pending.extend_from_slice(&buf[..k]);
            for rec in pending.chunks_exact(8) {
                let t = u64::from_le_bytes(rec.try_into().unwrap());
                let first = *tag.get_or_insert(t);
                if (t != first || !(lo..=hi).contains(&t)) && r.errors.len() < 5 {
                    r.error(format!("foreign tag {t} (connection's tag {first}, expected {lo}..={hi})"));
                }
            }
            pending.drain(..pending.len() / 8 * 8);
        }
        if let Err(e) = write_all(&mut s, opts, &buf[..k]) {
            r.error(format!("write: {}", errno_name(&e)));
            break;
        }
        n += k as u64;
    }
    let _ = s.shutdown(Shutdown::Write);
    r.set("received", n);
    r
}

fn sink(mut s: TcpStream, _: usize, opts: &Opts) -> Report {
    let mut r = Report::default();
    receive(&mut s, &Stream::random(opts.seed), opts, &mut r, |_, _| {});
    r
}

/// Reads the client's stream to EOF, then answers with `random(seed + 1)` and closes.
fn serve_halfclose(mut s: TcpStream, _: usize, opts: &Opts) -> Report {
    let mut r = Report::default();
    receive(&mut s, &Stream::random(opts.seed), opts, &mut r, |_, _| {});
    let mut w = Report::default();
    if let Err(e) = transmit(&mut s, &Stream::random(opts.seed + 1), opts, &mut w) {
        r.error(format!("answer after EOF: {e:#}"));
    }
    r.set("answered", w.fields["written"].clone());
    r
}

/// Sends, shuts down its sending side, checks that writing now fails, and reads the answer.
fn client_halfclose(mut s: TcpStream, _: usize, opts: &Opts) -> Report {
    let mut r = Report::default();
    if let Err(e) = transmit(&mut s, &Stream::random(opts.seed), opts, &mut r) {
        r.error(format!("{e:#}"));
    }
    s.shutdown(Shutdown::Write).expect("shutdown");
    r.set("write_after_shutdown", s.write(b"x").map_or_else(|e| errno_name(&e), |_| "ok".into()));
    let mut answer = Report::default();
    receive(&mut s, &Stream::random(opts.seed + 1), opts, &mut answer, |_, _| {});
    r.errors.extend(answer.errors);
    r.set("answer_received", answer.fields["received"].clone());
    r.set("answer_end", answer.fields["read_end"].clone());
    r
}

/// Waits `--delay-ms` (so data can sit unread when a reset comes), reads, acknowledges with
/// one byte after `--ack-after` bytes, and records how reading ended and what a write then
/// gets.
fn serve_rst(mut s: TcpStream, _: usize, opts: &Opts) -> Report {
    let mut r = Report::default();
    thread::sleep(opts.delay);
    let ack = opts.ack_after;
    receive(&mut s, &Stream::random(opts.seed), opts, &mut r, |s, n| {
        if Some(n) == ack {
            let _ = write_all(s, opts, b"A");
        }
    });
    r.set("write_after", s.write(b"x").map_or_else(|e| errno_name(&e), |_| "ok".into()));
    r.set(
        "read_again",
        s.read(&mut [0u8; 16])
            .map_or_else(|e| errno_name(&e), |n| if n == 0 { "eof".into() } else { format!("{n} bytes") }),
    );
    r
}

/// Sends, waits for the server's one-byte acknowledgement when `--ack-after` is given, waits
/// `--delay-ms` (so the server is blocked in read() by then), then closes with SO_LINGER 0,
/// which resets the connection.
fn client_rst(mut s: TcpStream, _: usize, opts: &Opts) -> Report {
    let mut r = Report::default();
    if let Err(e) = transmit(&mut s, &Stream::random(opts.seed), opts, &mut r) {
        r.error(format!("{e:#}"));
    }
    if opts.ack_after.is_some() {
        let mut b = [0u8; 1];
        match read(&mut s, opts, &mut b) {
            Ok(1) => {}
            Ok(_) => r.error("no acknowledgement: EOF"),
            Err(e) => r.error(format!("no acknowledgement: {}", errno_name(&e))),
        }
    }
    thread::sleep(opts.delay);
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    if let Err(e) = socket::setsockopt(&s, sockopt::Linger, &linger) {
        r.error(format!("SO_LINGER: {e}"));
    }
    r
}
