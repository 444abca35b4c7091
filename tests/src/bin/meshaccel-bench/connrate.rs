//! Connection rate: connect, 1 byte each way, close, as fast as one client can, against a
//! server that handles one connection at a time. The server closes first (it has its answer
//! out), so TIME_WAIT sockets pile up on its side and the client never runs out of ports.
//! Runs inside pods over TCP, and outside over an AF_UNIX path socket as the reference.
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use serde_json::json;

use crate::args::Args;

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Box<dyn Conn>> {
        Ok(match self {
            Self::Tcp(l) => Box::new(l.accept()?.0),
            Self::Unix(l) => Box::new(l.accept()?.0),
        })
    }
}

/// Pins the calling thread to `--cpu` when given.
pub fn pin_from(a: &Args) -> Result<()> {
    match a.get_or("cpu", String::new())? {
        s if s.is_empty() => Ok(()),
        s => pin(s.parse()?),
    }
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

/// Reads exactly one byte; EAGAIN/EINTR (which a redirected blocking socket can return
/// spuriously) are retried.
fn read_byte(c: &mut dyn Conn) -> io::Result<usize> {
    let mut b = [0u8; 1];
    loop {
        match c.read(&mut b) {
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            other => return other,
        }
    }
}

/// `conn-server`: prints `listening`, then serves until killed.
pub fn serve(a: &Args) -> Result<()> {
    pin_from(a)?;
    let listener = match a.get_or("unix", String::new())? {
        p if p.is_empty() => Listener::Tcp(TcpListener::bind(a.get::<SocketAddr>("listen")?)?),
        p => Listener::Unix(UnixListener::bind(&p).with_context(|| format!("bind {p}"))?),
    };
    emit(json!({"event": "listening"}));
    loop {
        let mut c = listener.accept()?;
        // A failed exchange is the client's to report; keep serving.
        if read_byte(&mut *c).ok() == Some(1) {
            let _ = c.write_all(b"y");
        }
    }
}

/// `conn-client`: connections for `--secs`, then `{"event": "done", "conns", "secs",
/// "errors"}`.
pub fn client(a: &Args) -> Result<()> {
    pin_from(a)?;
    let secs: f64 = a.get("secs")?;
    let unix: String = a.get_or("unix", String::new())?;
    let tcp: Option<SocketAddr> = if unix.is_empty() { Some(a.get("connect")?) } else { None };
    let open = || -> io::Result<Box<dyn Conn>> {
        Ok(match tcp {
            Some(addr) => {
                let s = TcpStream::connect(addr)?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            None => Box::new(UnixStream::connect(&unix)?),
        })
    };
    let (start, mut conns, mut errors) = (Instant::now(), 0u64, Vec::<String>::new());
    let deadline = start + Duration::from_secs_f64(secs);
    while Instant::now() < deadline {
        let exchange = || -> io::Result<()> {
            let mut c = open()?;
            c.write_all(b"x")?;
            match (read_byte(&mut *c)?, read_byte(&mut *c)?) {
                (1, 0) => Ok(()),
                got => Err(io::Error::other(format!("answer/EOF reads returned {got:?}"))),
            }
        };
        match exchange() {
            Ok(()) => conns += 1,
            Err(e) if errors.len() < 5 => errors.push(e.to_string()),
            Err(_) => {}
        }
        if errors.len() >= 5 {
            break;
        }
    }
    emit(json!({"event": "done", "conns": conns, "secs": start.elapsed().as_secs_f64(), "errors": errors}));
    Ok(())
}
