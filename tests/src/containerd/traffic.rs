//! TCP between pods with the busybox image: a sink container hashes every connection's
//! bytes, a client container pipes a producer into `nbcat` (event-driven, non-blocking
//! sockets, as the programs meshaccel accelerates) and hashes what it sent. Equal hashes:
//! every byte arrived, in order.
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use meshaccel_node::cri::Cri;

use super::pods::exec;
use super::{poll, Containerd, CriPod};

pub const PORT: u16 = 5000;
const RECEIVED: &str = "/tmp/received";
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// A pod's listening container.
#[derive(Clone, Debug)]
pub struct Sink {
    pub container: String,
    pub ip: Ipv4Addr,
}

impl Containerd {
    /// Starts a container in `pod` that accepts connections on [`PORT`] forever, appending
    /// the SHA-256 of each connection's bytes to a file.
    pub fn start_sink(&self, pod: &CriPod) -> Result<Sink> {
        let port = PORT.to_string();
        let hash = format!("sha256sum >> {RECEIVED}");
        let container = self.start_container(pod, "sink", &["nbcat", "-l", &port, "sh", "-c", &hash])?;
        Ok(Sink { container, ip: pod.ip })
    }

    /// A container that only hosts `exec`s.
    pub fn start_idle(&self, pod: &CriPod) -> Result<String> {
        self.start_container(pod, "client", &["sleep", "3600"])
    }

    /// The hashes the sink has recorded, oldest first.
    pub fn received(&self, sink: &Sink) -> Result<Vec<String>> {
        let out =
            self.exec(&sink.container, &["sh", "-c", &format!("cat {RECEIVED} 2>/dev/null || true")], EXEC_TIMEOUT)?;
        Ok(out.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect())
    }

    /// Waits for the sink's `n`-th record (the handler finishes just after the client).
    pub fn nth_received(&self, sink: &Sink, n: usize) -> Result<String> {
        let mut have = 0;
        poll(Duration::from_secs(10), || {
            let got = self.received(sink)?;
            have = got.len();
            Ok(got.get(n - 1).cloned())
        })
        .with_context(|| format!("sink {} has {have} records, expected {n}", sink.ip))
    }

    /// Sends `bytes` random bytes over one new connection from `client` to `sink` and checks
    /// they arrived intact.
    pub fn transfer(&self, client: &str, sink: &Sink, bytes: u64) -> Result<()> {
        let before = self.received(sink)?.len();
        let sent = send(self.cri(), client, sink, &format!("head -c {bytes} /dev/urandom"))?;
        let got = self.nth_received(sink, before + 1)?;
        ensure!(got == sent, "sink {} received bytes hashing to {got}, sent {sent}", sink.ip);
        Ok(())
    }
}

/// Runs `producer` (a shell snippet writing to stdout) with its stdout connected to `sink`
/// from `client`; returns the SHA-256 of what it produced. Takes any CRI client so it can
/// run on its own thread.
pub fn send(cri: &Cri, client: &str, sink: &Sink, producer: &str) -> Result<String> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let copy = format!("/tmp/sent-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let script = format!("{producer} | tee {copy} | nbcat {} {PORT} && sha256sum < {copy} && rm {copy}", sink.ip);
    let out = exec(cri, client, &["sh", "-c", &script], EXEC_TIMEOUT)?;
    out.split_whitespace().next().map(str::to_string).ok_or_else(|| anyhow::anyhow!("no hash from {script:?}"))
}
