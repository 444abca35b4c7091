//! A tag-checking echo server: one thread per connection, until stdin says `stop`.
use std::io::BufRead;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use anyhow::{Context, Result};
use serde_json::json;

/// `echo --listen ADDR [--expect-prefixes P,Q,…]`.
#[derive(clap::Args, Debug)]
pub struct Echo {
    /// Where to listen.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Tag prefixes a connection may carry (default: any).
    #[arg(long = "expect-prefixes", value_name = "P,Q,…", value_delimiter = ',')]
    pub expect_prefixes: Vec<u32>,
}
use crate::io::{accept, emit, errno_name, prefix_of, read_some, records, write_all};

/// Error messages kept for the report; the rest are only counted.
pub const KEPT_ERRORS: usize = 20;

#[derive(Default)]
pub struct Errors {
    count: AtomicU64,
    kept: Mutex<Vec<String>>,
}

impl Errors {
    pub fn add(&self, e: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.kept.lock().unwrap();
        if kept.len() < KEPT_ERRORS {
            kept.push(e);
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn kept(&self) -> Vec<String> {
        self.kept.lock().unwrap().clone()
    }
}

#[derive(Default)]
struct Served {
    conns: AtomicU64,
    bytes: AtomicU64,
    errors: Errors,
}

pub fn serve(a: &Echo) -> Result<()> {
    let listen = a.listen;
    let expected: Option<Vec<u32>> = (!a.expect_prefixes.is_empty()).then(|| a.expect_prefixes.clone());
    let listener = TcpListener::bind(listen).with_context(|| format!("listen on {listen}"))?;
    listener.set_nonblocking(true)?;
    emit(json!({"event": "listening", "addr": listener.local_addr()?.to_string()}));
    let served = Arc::new(Served::default());
    let s = served.clone();
    thread::spawn(move || loop {
        match accept(&listener) {
            Ok(c) => {
                let (s, expected) = (s.clone(), expected.clone());
                thread::spawn(move || echo(&c, expected.as_deref(), &s));
            }
            Err(e) => s.errors.add(format!("accept: {}", errno_name(&e))),
        }
    });
    // Serve until told to stop (or the test harness goes away).
    for line in std::io::stdin().lock().lines() {
        if line?.trim() == "stop" {
            break;
        }
    }
    let e = &served.errors;
    emit(json!({
        "event": "done",
        "conns": served.conns.load(Ordering::Relaxed),
        "bytes": served.bytes.load(Ordering::Relaxed),
        "error_count": e.count(),
        "errors": e.kept(),
    }));
    Ok(())
}

/// Echoes one connection; every record must carry the connection's first tag, with an
/// expected prefix.
fn echo(s: &TcpStream, expected: Option<&[u32]>, served: &Served) {
    served.conns.fetch_add(1, Ordering::Relaxed);
    let peer = s.peer_addr().map_or_else(|_| "?".into(), |a| a.to_string());
    let (mut buf, mut partial, mut first) = (vec![0u8; 64 * 1024], Vec::with_capacity(16), None);
    let mut foreign = 0u64;
    loop {
        let n = match read_some(s, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                served.errors.add(format!("{peer}: read: {}", errno_name(&e)));
                break;
            }
        };
        // Records may straddle reads: complete the one left over from the last read first.
        let take = ((8 - partial.len()) % 8).min(n);
        partial.extend_from_slice(&buf[..take]);
        let whole = (n - take) / 8 * 8;
        let done_partial = if partial.len() == 8 { Some(std::mem::take(&mut partial)) } else { None };
        for t in done_partial.iter().flat_map(|p| records(p)).chain(records(&buf[take..take + whole])) {
            let own = *first.get_or_insert(t);
            if t != own || expected.is_some_and(|ex| !ex.contains(&prefix_of(t))) {
                foreign += 1;
                if foreign == 1 {
                    served.errors.add(format!(
                        "{peer}: foreign tag {t:#x} (connection's first tag {own:#x}, expected prefixes {expected:?})"
                    ));
                }
            }
        }
        partial.extend_from_slice(&buf[take + whole..n]);
        if let Err(e) = write_all(s, &buf[..n]) {
            served.errors.add(format!("{peer}: write: {}", errno_name(&e)));
            break;
        }
        served.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    if foreign > 1 {
        served.errors.add(format!("{peer}: {foreign} foreign records in all"));
    }
}
