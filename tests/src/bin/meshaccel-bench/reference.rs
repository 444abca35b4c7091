//! The physical-limit column: AF_UNIX stream sockets measured the way sockperf measures TCP
//! (sockperf.rs): non-blocking sockets, one recv per epoll wakeup (10 ms epoll timeouts),
//! `size`-byte messages, a send that hits EAGAIN retried at once, the receiver reading up to
//! 65507 bytes per recv (the client, waiting for its answer, up to `size`); latency one way,
//! half the mean round trip; bandwidth the bytes the client sent ÷ its send time. Client and
//! server are two threads of this process over a socketpair, on the CPUs sockperf gets.
//! The same loop runs over TCP for the rows sockperf cannot measure (perf.rs).
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use crate::connrate::pin;
use crate::sockperf::{Test, MAX_SIZE};

/// A receiver that has seen nothing for this long has lost its peer.
const STALL: Duration = Duration::from_secs(10);

/// Latency in µs (one way) or bandwidth in MB/s.
pub fn socketpair(test: Test, size: usize, secs: u32, pin_cpus: bool) -> Result<f64> {
    let (client, server) = UnixStream::pair()?;
    client.set_nonblocking(true)?;
    server.set_nonblocking(true)?;
    let server = thread::spawn(move || -> io::Result<()> {
        if pin_cpus {
            pin(1).map_err(io::Error::other)?;
        }
        serve(server, test, size)
    });
    if pin_cpus {
        pin(0)?;
    }
    let sent = drive(client, test, size, Duration::from_secs(secs.into()));
    server.join().map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    let (messages, elapsed) = sent?;
    if pin_cpus {
        unpin()?;
    }
    Ok(value(test, size, messages, elapsed))
}

/// Latency in µs (one way) or bandwidth in MB/s of `messages` (round trips for ping-pong)
/// sent in `elapsed`.
pub fn value(test: Test, size: usize, messages: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    match test {
        Test::PingPong => secs * 1e6 / (2 * messages.max(1)) as f64,
        Test::Stream => (messages * size as u64) as f64 / secs / 1e6,
    }
}

fn unpin() -> Result<()> {
    let mut all = nix::sched::CpuSet::new();
    (0..std::thread::available_parallelism()?.get()).try_for_each(|c| all.set(c))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &all).context("unpin")
}

/// One non-blocking stream socket in its own epoll set, waiting for input.
pub struct Socket<S> {
    s: S,
    epoll: Epoll,
}

impl<S: Read + Write + AsFd> Socket<S> {
    pub fn new(s: S) -> io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(s.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
        Ok(Self { s, epoll })
    }

    /// Waits in epoll_wait until readable, then one recv of up to `buf.len()` bytes; 0 is EOF.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let since = Instant::now();
        loop {
            match self.epoll.wait(&mut [EpollEvent::empty()], 10u8) {
                Ok(0) if since.elapsed() > STALL => return Err(io::Error::other("no data for 10 s")),
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
            match self.s.read(buf) {
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                other => return other,
            }
        }
    }

    /// Sends all of `buf`; sockperf retries a send that returns EAGAIN at once (it never
    /// waits for EPOLLOUT), so this does too.
    pub fn send(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.s.write(buf) {
                Ok(n) => buf = &buf[n..],
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The client: ping-pongs or writes `size`-byte messages for `dur`, then closes; the
/// messages (round trips for ping-pong) and the time they took.
fn drive(s: UnixStream, test: Test, size: usize, dur: Duration) -> io::Result<(u64, Duration)> {
    drive_socket(Socket::new(s)?, test, size, dur)
}

/// [`drive`] on any socket.
pub fn drive_socket<S: Read + Write + AsFd>(
    mut s: Socket<S>,
    test: Test,
    size: usize,
    dur: Duration,
) -> io::Result<(u64, Duration)> {
    let (mut msg, mut reply) = (vec![0u8; size], vec![0u8; size]);
    let (start, mut n) = (Instant::now(), 0u64);
    while start.elapsed() < dur {
        s.send(&msg)?;
        if test == Test::PingPong {
            let mut got = 0;
            while got < size {
                match s.recv(&mut reply[got..])? {
                    0 => return Err(io::Error::other("EOF before the answer")),
                    k => got += k,
                }
            }
            std::mem::swap(&mut msg, &mut reply);
        }
        n += 1;
    }
    Ok((n, start.elapsed()))
}

/// The server: echoes each whole `size`-byte message (ping-pong) or drops what it reads
/// (stream), until EOF.
fn serve(s: UnixStream, test: Test, size: usize) -> io::Result<()> {
    serve_socket(Socket::new(s)?, test, size)
}

/// [`serve`] on any socket.
pub fn serve_socket<S: Read + Write + AsFd>(mut s: Socket<S>, test: Test, size: usize) -> io::Result<()> {
    let (mut buf, mut pending) = (vec![0u8; MAX_SIZE], 0usize);
    loop {
        let n = s.recv(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if test == Test::PingPong {
            pending += n;
            while pending >= size {
                s.send(&buf[..size])?;
                pending -= size;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socketpair_measures_a_positive_value() {
        for test in [Test::PingPong, Test::Stream] {
            let v = socketpair(test, 64, 1, false).unwrap();
            assert!(v.is_finite() && v > 0.0, "{test:?}: {v}");
        }
    }
}
