//! Many concurrent connections in one event loop (epoll, no thread per connection), for the
//! scale tests. Roles: `server` accepts `--conns` connections on `--listen`, `client` opens
//! `--conns` to `--connect`, `loopback` does both on `127.0.0.1:--port`. With `--ports K`
//! the server listens on K consecutive ports from the given one and the client spreads its
//! connections over them: connect()'s ephemeral port search scans the ports already used
//! towards the same destination, which at ~16 000 per destination took 5 ms per connect.
//!
//! Each connection carries one exchange, server first: the server's greeting is a nonce,
//! the client answers the nonce XOR [`MAGIC`] and the server checks it. Server first, so
//! that the server end has paired before the client sends (a client that sends before
//! that stays on plain TCP by design). Then every connection stays open until `close`
//! arrives on stdin (client ends close; server ends close at EOF).
//!
//! Events: `listening`, `established` (every exchange done, with `secs`), `done` (with
//! `errors`). `--inflight` bounds connects that have no greeting yet, so the listen
//! backlog (`somaxconn`) never overflows into SYN retransmits.
use std::io::{self, BufRead};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage};
use nix::unistd::{read, write};
use serde_json::json;

/// `many --role server|client|loopback --conns N`.
#[derive(clap::Args, Debug)]
pub struct Many {
    #[arg(long, value_enum)]
    role: Role,
    /// Connections (each role: accepted, opened, or both).
    #[arg(long, value_name = "N")]
    conns: usize,
    /// server: where to listen (the first of `--ports` consecutive ports).
    #[arg(long, value_name = "ADDR", required_if_eq("role", "server"))]
    listen: Option<SocketAddr>,
    /// client: where to connect (the first of `--ports` consecutive ports).
    #[arg(long, value_name = "ADDR", required_if_eq("role", "client"))]
    connect: Option<SocketAddr>,
    /// loopback: the port on 127.0.0.1.
    #[arg(long, required_if_eq("role", "loopback"))]
    port: Option<u16>,
    /// Consecutive ports the server listens on and the client spreads over.
    #[arg(long, value_name = "K", default_value_t = 1)]
    ports: u16,
    /// Connects in flight without a greeting yet, at most.
    #[arg(long, value_name = "N", default_value_t = 256)]
    inflight: usize,
    /// Fail after this long without progress.
    #[arg(long = "timeout-ms", value_name = "MS", default_value_t = 60_000)]
    timeout_ms: u64,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Role {
    /// Accept --conns connections on --listen.
    Server,
    /// Open --conns connections to --connect.
    Client,
    /// Both, on 127.0.0.1:--port.
    Loopback,
}

const MAGIC: u64 = 0x6d65_7368_6163_6365;
/// epoll data of stdin and of listener `k` (`LISTENER + k`); connections are indexes below.
const STDIN: u64 = u64::MAX;
const LISTENER: u64 = 1 << 62;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Server end: greeted, waiting for the answer; then waiting for EOF.
    Accepted { nonce: u64, verified: bool },
    /// Client end: waiting for the greeting; then idle until `close`.
    Connected { answered: bool },
}

struct Conn {
    fd: Option<OwnedFd>,
    side: Side,
    buf: [u8; 8],
    got: usize,
}

struct Loop {
    epoll: Epoll,
    conns: Vec<Conn>,
    listeners: Vec<OwnedFd>,
    target: Option<SocketAddr>,
    ports: u16,
    /// Connections each role must complete.
    want_accepted: usize,
    want_connected: usize,
    opened: usize,
    answered: usize,
    verified: usize,
    eofs: usize,
    inflight: usize,
    errors: Vec<String>,
    /// Errors beyond the first few are only counted.
    more_errors: usize,
}

fn emit(v: serde_json::Value) {
    println!("{v}");
}

fn nonblocking_socket(addr: &SocketAddr) -> Result<OwnedFd> {
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    Ok(socket::socket(family, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?)
}

impl Loop {
    fn error(&mut self, e: String) {
        if self.errors.len() < 20 {
            self.errors.push(e);
        } else {
            self.more_errors += 1;
        }
    }

    fn register(&mut self, fd: OwnedFd, side: Side) -> Result<()> {
        let id = self.conns.len() as u64;
        self.epoll.add(&fd, EpollEvent::new(EpollFlags::EPOLLIN, id))?;
        self.conns.push(Conn { fd: Some(fd), side, buf: [0; 8], got: 0 });
        Ok(())
    }

    /// Opens connections up to the in-flight bound.
    fn connect_more(&mut self, max_inflight: usize) -> Result<()> {
        let Some(target) = self.target else { return Ok(()) };
        while self.opened < self.want_connected && self.inflight < max_inflight {
            let mut target = target;
            target.set_port(target.port() + (self.opened % usize::from(self.ports)) as u16);
            let fd = nonblocking_socket(&target)?;
            match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(target)) {
                Ok(()) | Err(Errno::EINPROGRESS) => {}
                Err(e) => bail!("connect #{} to {target}: {e}", self.opened),
            }
            self.register(fd, Side::Connected { answered: false })?;
            self.opened += 1;
            self.inflight += 1;
        }
        Ok(())
    }

    fn accept_all(&mut self, k: usize) -> Result<()> {
        let raw = self.listeners[k].as_raw_fd();
        loop {
            match socket::accept4(raw, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC) {
                Ok(fd) => {
                    // SAFETY: accept4 returned a new fd that nothing else owns.
                    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                    let nonce = ((std::process::id() as u64) << 32) | self.conns.len() as u64;
                    // 8 bytes into an empty send buffer: all or an error.
                    match write(&fd, &nonce.to_le_bytes()) {
                        Ok(8) => self.register(fd, Side::Accepted { nonce, verified: false })?,
                        other => self.error(format!("greeting: {other:?}")),
                    }
                }
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR | Errno::ECONNABORTED) => {}
                Err(e) => bail!("accept: {e}"),
            }
        }
    }

    /// Closes one connection's socket.
    fn close(&mut self, id: usize) {
        if let Some(fd) = self.conns[id].fd.take() {
            let _ = self.epoll.delete(&fd);
        }
    }

    /// A connection failed before its exchange was done.
    fn failed(&mut self, id: usize, what: String) {
        if matches!(self.conns[id].side, Side::Connected { answered: false }) {
            self.inflight -= 1;
        }
        self.close(id);
        self.error(format!("conn {id}: {what}"));
    }

    fn readable(&mut self, id: usize) {
        let c = &mut self.conns[id];
        let Some(fd) = &c.fd else { return };
        let done = c.got == c.buf.len();
        let mut scratch = [0u8; 8];
        let into = if done { &mut scratch[..] } else { &mut c.buf[c.got..] };
        let n = match read(fd.as_fd(), into) {
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => return,
            Err(e) => return self.failed(id, format!("read: {e}")),
        };
        match (c.side, n, done) {
            // The peer closed after the exchange: the end a server waits for.
            (Side::Accepted { verified: true, .. }, 0, _) => {
                self.eofs += 1;
                self.close(id);
            }
            (_, 0, _) => self.failed(id, "EOF before the exchange was done".into()),
            (_, n, true) => self.failed(id, format!("{n} unexpected bytes")),
            (_, n, false) => {
                c.got += n;
                if c.got == c.buf.len() {
                    self.exchanged(id);
                }
            }
        }
    }

    /// All 8 bytes of a greeting (client end) or an answer (server end) arrived.
    fn exchanged(&mut self, id: usize) {
        let c = &mut self.conns[id];
        let value = u64::from_le_bytes(c.buf);
        match c.side {
            Side::Connected { .. } => {
                self.inflight -= 1;
                let fd = c.fd.as_ref().expect("open");
                match write(fd, &(value ^ MAGIC).to_le_bytes()) {
                    Ok(8) => {
                        c.side = Side::Connected { answered: true };
                        self.answered += 1;
                    }
                    other => self.error(format!("conn {id}: answer: {other:?}")),
                }
            }
            Side::Accepted { nonce, .. } => {
                if value == nonce ^ MAGIC {
                    c.side = Side::Accepted { nonce, verified: true };
                    self.verified += 1;
                } else {
                    self.error(format!("conn {id}: answer {value:#x} to nonce {nonce:#x}"));
                }
            }
        }
    }

    fn established(&self) -> bool {
        self.answered == self.want_connected && self.verified == self.want_accepted
    }

    fn finished(&self) -> bool {
        self.eofs == self.want_accepted
    }

    /// Closes every client end (the server ends follow at EOF).
    fn close_clients(&mut self) {
        for id in 0..self.conns.len() {
            if matches!(self.conns[id].side, Side::Connected { .. }) {
                self.close(id);
            }
        }
    }
}

/// Each connection end is a file: use all the files the hard limit allows.
fn raise_file_limit() -> Result<()> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error()).context("getrlimit");
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error()).context("setrlimit");
    }
    Ok(())
}

pub fn main(a: &Many) -> Result<()> {
    raise_file_limit()?;
    let (conns, max_inflight, ports) = (a.conns, a.inflight, a.ports);
    let stall = Duration::from_millis(a.timeout_ms);
    let (listen, target): (Option<SocketAddr>, Option<SocketAddr>) = match a.role {
        Role::Server => (Some(a.listen.context("--listen")?), None),
        Role::Client => (None, Some(a.connect.context("--connect")?)),
        Role::Loopback => {
            let addr = SocketAddr::from(([127, 0, 0, 1], a.port.context("--port")?));
            (Some(addr), Some(addr))
        }
    };
    let mut l = Loop {
        epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
        conns: Vec::with_capacity(conns * (listen.is_some() as usize + target.is_some() as usize)),
        listeners: vec![],
        target,
        ports,
        want_accepted: if listen.is_some() { conns } else { 0 },
        want_connected: if target.is_some() { conns } else { 0 },
        opened: 0,
        answered: 0,
        verified: 0,
        eofs: 0,
        inflight: 0,
        errors: vec![],
        more_errors: 0,
    };
    if let Some(mut addr) = listen {
        for k in 0..ports {
            addr.set_port(addr.port() + u16::from(k > 0));
            let fd = nonblocking_socket(&addr)?;
            socket::setsockopt(&fd, socket::sockopt::ReuseAddr, &true)?;
            socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).with_context(|| format!("bind {addr}"))?;
            // The kernel clamps the backlog to net.core.somaxconn.
            socket::listen(&fd, Backlog::MAXCONN)?;
            l.epoll.add(&fd, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER + u64::from(k)))?;
            l.listeners.push(fd);
        }
        emit(json!({"event": "listening"}));
    }
    let stdin = io::stdin();
    l.epoll.add(stdin.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, STDIN))?;

    let started = Instant::now();
    let (mut reported, mut closing) = (false, false);
    let mut progress = (0, Instant::now());
    let mut events = vec![EpollEvent::empty(); 1024];
    // Client ends end at `close`, server ends at their EOF.
    while !(reported && l.finished() && (l.want_connected == 0 || closing)) {
        l.connect_more(max_inflight)?;
        let n = match l.epoll.wait(&mut events, 1000u16) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e).context("epoll_wait"),
        };
        for ev in &events[..n] {
            match ev.data() {
                STDIN => {
                    let mut line = String::new();
                    if stdin.lock().read_line(&mut line)? == 0 || line.trim() == "close" {
                        l.epoll.delete(stdin.as_fd())?;
                        closing = true;
                        l.close_clients();
                    }
                }
                k if k >= LISTENER => l.accept_all((k - LISTENER) as usize)?,
                id => l.readable(id as usize),
            }
        }
        if !reported && l.established() {
            reported = true;
            emit(json!({"event": "established", "conns": conns, "secs": started.elapsed().as_secs_f64()}));
        }
        let done_so_far = l.answered + l.verified + l.eofs;
        if done_so_far != progress.0 {
            progress = (done_so_far, Instant::now());
        } else if progress.1.elapsed() > stall && (!reported || closing) {
            l.error(format!(
                "no progress for {stall:?}: opened {} answered {} verified {} eofs {} in flight {}",
                l.opened, l.answered, l.verified, l.eofs, l.inflight
            ));
            break;
        }
        if !l.errors.is_empty() && !reported {
            break; // a failed connection would never let the phase complete
        }
    }
    if l.more_errors > 0 {
        let more = format!("… and {} more errors", l.more_errors);
        l.errors.push(more);
    }
    emit(json!({"event": "done", "conns": conns, "errors": l.errors, "secs": started.elapsed().as_secs_f64()}));
    Ok(())
}
