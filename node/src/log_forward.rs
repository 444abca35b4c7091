//! The plugin's log records teed to the installer over a unix datagram socket in the
//! plugin's `stateDir`, so that they also reach the installer container's stdout, which is
//! what `kubectl logs` shows (Istio CNI forwards its plugin's logs to its node agent alike).
//!
//! Sending never waits and never fails a CNI call: with no installer (no socket, or a stale
//! one) nothing is sent; when the installer's queue is full (it is slow or stuck) the record
//! is dropped, and the drops are counted and reported in the plugin's own log (file and
//! stderr) at the end of the call. Each record is one datagram: no framing, no partial record.
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use slog::{o, Drain, Level, Logger, OwnedKVList, Record};

use crate::logging::{json, Shared};

/// The socket the installer binds, in the plugin's `stateDir`.
pub const SOCKET: &str = "plugin-log.sock";

/// The longest record forwarded (the receiver's buffer); longer ones are dropped.
pub const MAX_RECORD: usize = 16 * 1024;

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// Sends what was written since the last flush (slog-json flushes after each record) as
/// one datagram, without waiting.
struct Datagrams {
    sock: UnixDatagram,
    buf: Vec<u8>,
    dropped: Arc<AtomicU64>,
}

impl io::Write for Datagrams {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        // Bounded: past MAX_RECORD the record is dropped at flush anyway.
        if self.buf.len() <= MAX_RECORD {
            self.buf.extend_from_slice(b);
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // WouldBlock: the installer's queue is full; ConnectionRefused: it stopped since.
        if self.buf.len() > MAX_RECORD || self.sock.send(&self.buf).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.buf.clear();
        Ok(())
    }
}

/// The plugin's local drain (file and stderr) plus the installer's socket.
pub(crate) struct Tee {
    local: Shared,
    installer: Shared,
    dropped: Arc<AtomicU64>,
    component: &'static str,
    socket: PathBuf,
}

impl Tee {
    /// `None` when nothing listens at the socket (no installer on this node, or not yet).
    pub(crate) fn new(component: &'static str, local: Shared, level: Level, state_dir: &Path) -> Option<Self> {
        let socket = socket_path(state_dir);
        let sock = UnixDatagram::unbound().ok()?;
        sock.set_nonblocking(true).ok()?;
        sock.connect(&socket).ok()?;
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Datagrams { sock, buf: Vec::with_capacity(1024), dropped: dropped.clone() };
        let installer: Shared = Arc::new(slog::LevelFilter::new(json(writer), level).fuse());
        Some(Self { local, installer, dropped, component, socket })
    }
}

impl Drain for Tee {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let _ = self.local.log(record, values);
        let _ = self.installer.log(record, values);
        Ok(())
    }
}

impl Drop for Tee {
    /// The call is over (its logger is gone): say what the installer did not get.
    fn drop(&mut self) {
        let n = self.dropped.load(Ordering::Relaxed);
        if n > 0 {
            let log = Logger::root(self.local.clone(), o!("component" => self.component, "pid" => std::process::id()));
            slog::warn!(log, "log records not forwarded to the installer: its queue was full (or it stopped)";
                "records" => n, "socket" => %self.socket.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use crate::logging::plugin_logger;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meshaccel-logfwd-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn records(file: &Path) -> Vec<Value> {
        fs::read_to_string(file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn records_at_the_level_reach_the_socket_one_per_datagram() {
        let dir = temp_dir("level");
        let rx = UnixDatagram::bind(socket_path(&dir)).unwrap();
        rx.set_nonblocking(true).unwrap();
        let file = dir.join("plugin.log");
        let log = plugin_logger("meshaccel", file.to_str().unwrap(), Level::Warning, &dir);
        slog::info!(log, "below the level");
        slog::warn!(log, "cannot accelerate"; "pod" => "ns/p");
        drop(log);
        let mut buf = vec![0; MAX_RECORD];
        let n = rx.recv(&mut buf).unwrap();
        let got: Value = serde_json::from_slice(&buf[..n]).unwrap();
        assert_eq!((got["msg"].as_str(), got["pod"].as_str()), (Some("cannot accelerate"), Some("ns/p")), "{got}");
        assert_eq!(got["level"], "WARN");
        assert!(rx.recv(&mut buf).is_err(), "one datagram per record at the level, nothing else");
        assert_eq!(records(&file).len(), 1, "the file gets the same record");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_queue_drops_without_waiting_and_says_so() {
        let dir = temp_dir("full");
        let rx = UnixDatagram::bind(socket_path(&dir)).unwrap();
        let filler = UnixDatagram::unbound().unwrap();
        filler.set_nonblocking(true).unwrap();
        filler.connect(socket_path(&dir)).unwrap();
        while filler.send(b"{}").is_ok() {}
        let file = dir.join("plugin.log");
        let log = plugin_logger("meshaccel", file.to_str().unwrap(), Level::Info, &dir);
        let start = Instant::now();
        for i in 0..100 {
            slog::error!(log, "setup failed"; "i" => i);
        }
        drop(log);
        assert!(start.elapsed() < Duration::from_secs(5), "logging waited for the receiver: {:?}", start.elapsed());
        let recs = records(&file);
        assert_eq!(recs.len(), 101, "every record in the file, and the report: {recs:?}");
        let report = recs.last().unwrap();
        assert_eq!(report["records"], 100, "{report}");
        assert!(report["msg"].as_str().unwrap().contains("not forwarded"), "{report}");
        drop(rx);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_installer_no_forwarding() {
        let dir = temp_dir("none");
        let file = dir.join("plugin.log");
        // A socket file nobody listens on: an installer that was killed.
        drop(UnixDatagram::bind(socket_path(&dir)).unwrap());
        for state_dir in [dir.join("absent"), dir.clone()] {
            let log = plugin_logger("meshaccel", file.to_str().unwrap(), Level::Info, &state_dir);
            slog::warn!(log, "logged");
        }
        let recs = records(&file);
        assert_eq!(recs.len(), 2, "{recs:?}");
        assert!(recs.iter().all(|r| r["msg"] == "logged"), "nothing reported as dropped: {recs:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
