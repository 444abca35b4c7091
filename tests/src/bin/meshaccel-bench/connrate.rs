//! Connection rate: connect, 1 byte each way, close, as fast as one client can, against a
//! server that answers each connection. The server closes first (it has its answer out), so
//! TIME_WAIT sockets pile up on its side and the client never runs out of ports. Runs inside
//! pods over TCP, and outside over an AF_UNIX path socket as the reference.
//!
//! Both ends are event-driven, as the programs meshaccel accelerates: every socket is
//! O_NONBLOCK from its creation (the client's connect returns EINPROGRESS, the listener is
//! non-blocking when connections are established) and each side waits in epoll_wait.
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrLike, SockaddrStorage, UnixAddr,
};
use nix::unistd::{read, write, Pid};
use serde_json::json;

/// `conn-server (--listen ADDR | --unix PATH) [--cpu N]`, inside a pod or outside.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    #[command(flatten)]
    at: Listen,
    #[command(flatten)]
    cpu: Cpu,
}

#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
struct Listen {
    /// TCP address to listen on.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// AF_UNIX path to listen on (the reference).
    #[arg(long, value_name = "PATH")]
    unix: Option<String>,
}

/// `conn-client (--connect ADDR | --unix PATH) --secs N [--cpu N]`.
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    #[command(flatten)]
    to: Connect,
    /// How long to make connections.
    #[arg(long)]
    secs: f64,
    #[command(flatten)]
    cpu: Cpu,
}

#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
struct Connect {
    /// TCP address to connect to.
    #[arg(long, value_name = "ADDR")]
    connect: Option<SocketAddr>,
    /// AF_UNIX path to connect to (the reference).
    #[arg(long, value_name = "PATH")]
    unix: Option<String>,
}

/// `--cpu N`: both ends pin themselves when the bench pins.
#[derive(clap::Args, Debug)]
struct Cpu {
    /// Pin to this CPU.
    #[arg(long, value_name = "N")]
    cpu: Option<usize>,
}

/// A stalled exchange fails after this (the bench's deadline for the whole client is longer).
const STALL: Duration = Duration::from_secs(5);
/// epoll data of the listener; connections are their fds.
const LISTENER: u64 = u64::MAX;

/// Pins the calling thread to `--cpu` when given.
fn pin_from(a: &Cpu) -> Result<()> {
    a.cpu.map_or(Ok(()), pin)
}

pub fn pin(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pin to CPU {cpu}"))
}

fn emit(v: serde_json::Value) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// `--listen ADDR` or `--connect ADDR` (TCP), else `--unix PATH`.
fn address(tcp: Option<SocketAddr>, unix: Option<&str>) -> Result<Box<dyn SockaddrLike>> {
    Ok(match (tcp, unix) {
        (_, Some(p)) => Box::new(UnixAddr::new(p)?),
        (Some(a), None) => Box::new(SockaddrStorage::from(a)),
        (None, None) => bail!("no address"),
    })
}

fn is_tcp(addr: &dyn SockaddrLike) -> bool {
    addr.family() != Some(AddressFamily::Unix)
}

/// A non-blocking stream socket of `addr`'s family.
fn nonblocking_socket(addr: &dyn SockaddrLike) -> nix::Result<OwnedFd> {
    let family = addr.family().unwrap_or(AddressFamily::Unix);
    socket::socket(family, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)
}

/// `conn-server`: prints `listening`, then serves until killed.
pub fn serve(a: &ServerArgs) -> Result<()> {
    pin_from(&a.cpu)?;
    let addr = address(a.at.listen, a.at.unix.as_deref())?;
    let listener = nonblocking_socket(&*addr)?;
    if is_tcp(&*addr) {
        socket::setsockopt(&listener, sockopt::ReuseAddr, &true)?;
    }
    socket::bind(listener.as_raw_fd(), &*addr).context("bind")?;
    socket::listen(&listener, Backlog::new(128)?)?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
    emit(json!({"event": "listening"}));
    let mut conns: HashMap<u64, OwnedFd> = HashMap::new();
    let mut events = [EpollEvent::empty(); 64];
    loop {
        let n = match epoll.wait(&mut events, 1000u16) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        for ev in &events[..n] {
            if ev.data() == LISTENER {
                accept_all(&listener, &epoll, &mut conns)?;
                continue;
            }
            let Some(fd) = conns.get(&ev.data()) else { continue };
            let mut b = [0u8; 1];
            match read(fd.as_fd(), &mut b) {
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                // The question: answer (one byte into an empty send buffer), then close.
                Ok(1) => {
                    let _ = write(fd, b"y");
                }
                // A failed exchange is the client's to report; keep serving.
                _ => {}
            }
            // Closing the only fd of the socket also removes it from the epoll set.
            conns.remove(&ev.data());
        }
    }
}

fn accept_all(listener: &OwnedFd, epoll: &Epoll, conns: &mut HashMap<u64, OwnedFd>) -> Result<()> {
    loop {
        match socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC) {
            Ok(raw) => {
                // SAFETY: accept4 returned a new fd that nothing else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                epoll.add(&fd, EpollEvent::new(EpollFlags::EPOLLIN, raw as u64))?;
                conns.insert(raw as u64, fd);
            }
            Err(Errno::EAGAIN) => return Ok(()),
            Err(Errno::EINTR | Errno::ECONNABORTED) => {}
            Err(e) => bail!("accept: {e}"),
        }
    }
}

/// The client's epoll set, holding the one connection in flight.
struct Client {
    epoll: Epoll,
    /// What the connection in the set waits for (changed only when it must: each change is
    /// a syscall on the measured path).
    interest: Cell<EpollFlags>,
    target: Box<dyn SockaddrLike>,
}

impl Client {
    /// Waits until `fd` is ready for `flags`.
    fn wait(&self, fd: &OwnedFd, flags: EpollFlags) -> io::Result<()> {
        if self.interest.replace(flags) != flags {
            self.epoll.modify(fd, &mut EpollEvent::new(flags, 0))?;
        }
        let since = Instant::now();
        loop {
            match self.epoll.wait(&mut [EpollEvent::empty()], 100u8) {
                Ok(1..) => return Ok(()),
                Ok(0) if since.elapsed() > STALL => {
                    return Err(io::Error::other(format!("no {flags:?} for {STALL:?}")))
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// One read, after waiting for input as long as the socket has none.
    fn read(&self, fd: &OwnedFd, b: &mut [u8]) -> io::Result<usize> {
        loop {
            match read(fd.as_fd(), b) {
                Err(Errno::EAGAIN | Errno::EINTR) => self.wait(fd, EpollFlags::EPOLLIN)?,
                other => return Ok(other?),
            }
        }
    }

    /// One connection: connect, write `x`, read `y`, read EOF, close.
    fn exchange(&self) -> io::Result<()> {
        let fd = nonblocking_socket(&*self.target)?;
        if is_tcp(&*self.target) {
            socket::setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
        }
        self.epoll.add(&fd, EpollEvent::new(EpollFlags::EPOLLOUT, 0))?;
        self.interest.set(EpollFlags::EPOLLOUT);
        match socket::connect(fd.as_raw_fd(), &*self.target) {
            Ok(()) => {}
            Err(Errno::EINPROGRESS) => {
                self.wait(&fd, EpollFlags::EPOLLOUT)?;
                if let e @ 1.. = socket::getsockopt(&fd, sockopt::SocketError)? {
                    return Err(io::Error::from_raw_os_error(e));
                }
            }
            Err(e) => return Err(e.into()),
        }
        if write(&fd, b"x")? != 1 {
            return Err(io::Error::other("short write"));
        }
        let mut b = [0u8; 2];
        match (self.read(&fd, &mut b)?, self.read(&fd, &mut b)?) {
            (1, 0) => Ok(()),
            got => Err(io::Error::other(format!("answer/EOF reads returned {got:?}"))),
        }
    }
}

/// `conn-client`: connections for `--secs`, then `{"event": "done", "conns", "secs",
/// "errors"}`.
pub fn client(a: &ClientArgs) -> Result<()> {
    pin_from(&a.cpu)?;
    let secs = a.secs;
    let target = address(a.to.connect, a.to.unix.as_deref())?;
    let c = Client {
        epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
        interest: Cell::new(EpollFlags::empty()),
        target,
    };
    let (start, mut conns, mut errors) = (Instant::now(), 0u64, Vec::<String>::new());
    let deadline = start + Duration::from_secs_f64(secs);
    while Instant::now() < deadline && errors.len() < 5 {
        match c.exchange() {
            Ok(()) => conns += 1,
            Err(e) => errors.push(e.to_string()),
        }
    }
    emit(json!({"event": "done", "conns": conns, "secs": start.elapsed().as_secs_f64(), "errors": errors}));
    Ok(())
}
