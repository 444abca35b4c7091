//! Socket I/O as event-driven programs (Envoy, Go, nginx) do it: non-blocking sockets from
//! the start (connect, listen) that wait in poll() on EAGAIN — the programs meshaccel
//! accelerates (blocking ones stay plain TCP, see docs/design.md).
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde_json::Value;

/// Longest wait for one read or write before a connection counts as stuck.
pub const TIMEOUT: Duration = Duration::from_secs(20);

pub fn emit(v: Value) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

pub fn errno_name(e: &io::Error) -> String {
    e.raw_os_error().map_or_else(|| e.to_string(), |n| format!("{:?}", Errno::from_raw(n)))
}

fn wait(s: &impl AsFd, want: PollFlags, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    let mut fds = [PollFd::new(s.as_fd(), want)];
    let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX);
    if poll(&mut fds, ms)? == 0 {
        return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no {want:?} within {TIMEOUT:?}")));
    }
    Ok(())
}

/// Runs `op` until it does not fail with EAGAIN/EINTR, waiting for `want` in between.
fn retry(s: &TcpStream, want: PollFlags, mut op: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait(s, want, deadline)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// connect() on a socket that is non-blocking from its creation.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)?;
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Err(Errno::EINPROGRESS) => {
            wait(&fd, PollFlags::POLLOUT, Instant::now() + TIMEOUT)?;
            match socket::getsockopt(&fd, sockopt::SocketError)? {
                0 => {}
                e => return Err(io::Error::from_raw_os_error(e)),
            }
        }
        r => r?,
    }
    Ok(TcpStream::from(fd))
}

/// The next connection of a non-blocking listener, waiting in poll(); set non-blocking.
pub fn accept(listener: &TcpListener) -> io::Result<TcpStream> {
    loop {
        match listener.accept() {
            Ok((s, _)) => return s.set_nonblocking(true).map(|()| s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait(listener, PollFlags::POLLIN, Instant::now() + Duration::from_secs(3600))?
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

pub fn read_some(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    retry(s, PollFlags::POLLIN, || (&*s).read(buf))
}

pub fn read_exact(s: &TcpStream, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match read_some(s, buf)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf = &mut buf[n..],
        }
    }
    Ok(())
}

pub fn write_all(s: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = retry(s, PollFlags::POLLOUT, || (&*s).write(buf))?;
        buf = &buf[n..];
    }
    Ok(())
}

/// The tag of connection `n` of a client with `prefix`.
pub fn tag(prefix: u32, n: u32) -> u64 {
    u64::from(prefix) << 32 | u64::from(n)
}

pub fn prefix_of(tag: u64) -> u32 {
    (tag >> 32) as u32
}

/// Fills `buf` (a multiple of 8 bytes) with `tag` records.
pub fn fill_tag(buf: &mut [u8], tag: u64) {
    buf.chunks_exact_mut(8).for_each(|r| r.copy_from_slice(&tag.to_le_bytes()));
}

/// The tags of the whole records in `buf`.
pub fn records(buf: &[u8]) -> impl Iterator<Item = u64> + '_ {
    buf.chunks_exact(8).map(|r| u64::from_le_bytes(r.try_into().unwrap()))
}
