//! Ping-pong and stream over TCP where Debian's sockperf (3.7) cannot go: it has no IPv6. The
//! loop is the AF_UNIX reference's (reference.rs), which measures as sockperf does
//! (non-blocking sockets, epoll, `size`-byte messages, latency half the mean round trip,
//! bandwidth the bytes sent ÷ the send time). Every socket is non-blocking from before its
//! connect or listen and accepted non-blocking, so meshaccel accelerates it. As sockperf,
//! the client disables Nagle for ping-pong only (the server, which answers only in
//! ping-pong, always). The client's first 8 bytes say the test and the size to the server.
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::thread;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use meshaccel_tests::{Pod, Proc};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, SockFlag, SockaddrStorage};
use serde_json::json;

use crate::child::output_within;
use crate::connrate::pin;
use crate::reference::{drive_socket, serve_socket, value, Socket};
use crate::sockperf::{Measured, Test, MAX_SIZE, MIN_SIZE};

/// The server's port in each pod.
pub const PORT: u16 = 11112;

/// `perf-server --listen ADDR [--cpu N]`, inside a pod.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// TCP address to listen on.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Pin to this CPU.
    #[arg(long, value_name = "N")]
    cpu: Option<usize>,
}

/// `perf-client --connect ADDR --test T --size N --secs N [--cpu N]`.
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// TCP address of a `perf-server`.
    #[arg(long, value_name = "ADDR")]
    connect: SocketAddr,
    #[arg(long, value_enum)]
    test: Test,
    /// Message size in bytes (as sockperf's `-m`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(MIN_SIZE as i64..=MAX_SIZE as i64))]
    size: u32,
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    secs: u32,
    /// Pin to this CPU.
    #[arg(long, value_name = "N")]
    cpu: Option<usize>,
}

fn header(test: Test, size: u32) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&u32::from(test == Test::Stream).to_le_bytes());
    h[4..].copy_from_slice(&size.to_le_bytes());
    h
}

fn parse_header(h: [u8; 8]) -> Option<(Test, usize)> {
    let test = match u32::from_le_bytes(h[..4].try_into().ok()?) {
        0 => Test::PingPong,
        1 => Test::Stream,
        _ => return None,
    };
    let size = u32::from_le_bytes(h[4..].try_into().ok()?) as usize;
    (MIN_SIZE..=MAX_SIZE).contains(&size).then_some((test, size))
}

/// `perf-server`: prints `listening`, then serves each connection in a thread until killed.
pub fn serve(a: &ServerArgs) -> Result<()> {
    if let Some(cpu) = a.cpu {
        pin(cpu)?;
    }
    let listener = TcpListener::bind(a.listen).with_context(|| format!("bind {}", a.listen))?;
    listener.set_nonblocking(true)?;
    println!("{}", json!({"event": "listening"}));
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        match socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC) {
            Ok(raw) => {
                // SAFETY: accept4 returned a new fd that nothing else owns.
                let s = TcpStream::from(unsafe { OwnedFd::from_raw_fd(raw) });
                thread::spawn(move || {
                    if let Err(e) = serve_one(s) {
                        eprintln!("perf-server: {e:#}");
                    }
                });
            }
            Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNABORTED) => {}
            Err(e) => bail!("accept: {e}"),
        }
    }
}

fn serve_one(s: TcpStream) -> Result<()> {
    s.set_nodelay(true)?;
    let mut s = Socket::new(s)?;
    let mut h = [0u8; 8];
    let mut got = 0;
    while got < h.len() {
        match s.recv(&mut h[got..])? {
            0 => bail!("EOF before the header"),
            n => got += n,
        }
    }
    let (test, size) = parse_header(h).context("bad header")?;
    Ok(serve_socket(s, test, size)?)
}

/// A TCP connection to `to`, non-blocking from before its connect (as event-driven programs
/// connect, and as meshaccel requires to accelerate it).
fn connect(to: SocketAddr) -> Result<TcpStream> {
    let fd = socket::socket(
        if to.is_ipv6() { socket::AddressFamily::Inet6 } else { socket::AddressFamily::Inet },
        socket::SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(to)) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) => {
            let ready = poll(&mut [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)], PollTimeout::from(10_000u16))?;
            ensure!(ready == 1, "connect to {to}: no answer in 10 s");
            let err = socket::getsockopt(&fd, sockopt::SocketError)?;
            ensure!(err == 0, "connect to {to}: {}", std::io::Error::from_raw_os_error(err));
        }
        Err(e) => bail!("connect to {to}: {e}"),
    }
    Ok(TcpStream::from(fd))
}

/// `perf-client`: one connection, the test for `--secs`, then `{"event": "done", "value",
/// "data_bytes"}` (µs or MB/s; the bytes the connection carried, both ways for ping-pong).
pub fn client(a: &ClientArgs) -> Result<()> {
    if let Some(cpu) = a.cpu {
        pin(cpu)?;
    }
    let s = connect(a.connect)?;
    // sockperf's defaults: Nagle off for ping-pong, on for throughput.
    s.set_nodelay(a.test == Test::PingPong)?;
    let mut s = Socket::new(s)?;
    s.send(&header(a.test, a.size))?;
    let size = a.size as usize;
    let (messages, elapsed) = drive_socket(s, a.test, size, Duration::from_secs(a.secs.into()))?;
    let data_bytes = messages * size as u64 * if a.test == Test::PingPong { 2 } else { 1 };
    let v = value(a.test, size, messages, elapsed);
    println!("{}", json!({"event": "done", "value": v, "data_bytes": data_bytes}));
    Ok(())
}

/// A `perf-server` in `pod` on `[::]` (on CPU 1 when pinned), serving until dropped.
pub fn server(pod: &Pod, exe: &Path, pin: bool) -> Result<Proc> {
    let listen = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, PORT)).to_string();
    let mut args = vec!["perf-server", "--listen", &listen];
    if pin {
        args.extend(["--cpu", "1"]);
    }
    let mut p = Proc::spawn(&format!("{}: perf-server", pod.name()), pod.command(exe, &args)?)?;
    p.expect_event("listening", Duration::from_secs(30))?;
    Ok(p)
}

/// Runs `test` from a client in `pod` (on CPU 0 when pinned) against the server at `host`.
pub fn run(
    pod: &Pod,
    exe: &Path,
    host: std::net::IpAddr,
    test: Test,
    size: usize,
    secs: u32,
    pin: bool,
) -> Result<Measured> {
    let (to, size, secs_arg) = (SocketAddr::new(host, PORT).to_string(), size.to_string(), secs.to_string());
    let test_arg = if test == Test::PingPong { "ping-pong" } else { "stream" };
    let mut args = vec!["perf-client", "--connect", &to, "--test", test_arg, "--size", &size, "--secs", &secs_arg];
    if pin {
        args.extend(["--cpu", "0"]);
    }
    let out = output_within(pod.command(exe, &args)?, Duration::from_secs(u64::from(secs) + 30))?;
    let done: serde_json::Value = serde_json::from_str(out.trim()).with_context(|| format!("perf-client: {out:?}"))?;
    Ok(Measured {
        value: done["value"].as_f64().context("value")?,
        data_bytes: done["data_bytes"].as_u64().context("data_bytes")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_ones_are_refused() {
        for (t, s) in [(Test::PingPong, 14), (Test::Stream, 65507)] {
            assert_eq!(parse_header(header(t, s)), Some((t, s as usize)));
        }
        assert_eq!(parse_header(header(Test::Stream, 13)), None);
        let mut h = header(Test::Stream, 64);
        h[0] = 7;
        assert_eq!(parse_header(h), None);
    }

    /// Over IPv6 loopback in this process: both tests give a positive value and count bytes.
    #[test]
    fn measures_over_ipv6_loopback() {
        let listener = TcpListener::bind("[::1]:0").unwrap();
        let to = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        for test in [Test::PingPong, Test::Stream] {
            let server = thread::spawn({
                let l = listener.try_clone().unwrap();
                move || loop {
                    match socket::accept4(l.as_raw_fd(), SockFlag::SOCK_NONBLOCK) {
                        // SAFETY: a new fd that nothing else owns.
                        Ok(raw) => return serve_one(TcpStream::from(unsafe { OwnedFd::from_raw_fd(raw) })),
                        Err(Errno::EAGAIN) => thread::sleep(Duration::from_millis(5)),
                        Err(e) => return Err(e.into()),
                    }
                }
            });
            let mut s = Socket::new(connect(to).unwrap()).unwrap();
            s.send(&header(test, 64)).unwrap();
            let (n, elapsed) = drive_socket(s, test, 64, Duration::from_millis(200)).unwrap();
            server.join().unwrap().unwrap();
            let v = value(test, 64, n, elapsed);
            assert!(n > 0 && v.is_finite() && v > 0.0, "{test:?}: {n} messages, {v}");
        }
    }
}
