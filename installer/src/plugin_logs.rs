//! The plugin's log records (teed by `meshaccel_node::log_forward` over a datagram socket in
//! its stateDir) written to this container's stdout as JSON lines marked `"source":
//! "plugin"`: `kubectl logs` then shows why a pod was not accelerated, next to the
//! installer's own records (on stderr).
//!
//! Bounded memory: the kernel queues at most `net.unix.max_dgram_qlen` datagrams; one
//! thread takes each into a queue of [`QUEUE`] lines and another writes them out, so a
//! stalled stdout drops records (counted, logged) instead of growing, and never slows the
//! plugin (its send does not wait).
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread;

use anyhow::{Context, Result};
use meshaccel_node::files;
use meshaccel_node::log_forward::{self, MAX_RECORD};
use serde_json::{Map, Value};
use slog::{info, warn, Logger};

/// Lines waiting for stdout (each at most [`MAX_RECORD`] bytes: 4 MiB at worst).
const QUEUE: usize = 256;

/// The bound socket; removed when dropped (a daemon's orderly exit), so only a killed
/// daemon leaves it, and the next one replaces it.
pub struct Receiver {
    path: PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = files::remove_if_exists(&self.path);
    }
}

/// Binds the socket in `state_dir` (replacing a stale one) and starts forwarding.
pub fn start(state_dir: &Path, log: &Logger) -> Result<Receiver> {
    fs::create_dir_all(state_dir).with_context(|| format!("create {}", state_dir.display()))?;
    let path = log_forward::socket_path(state_dir);
    files::remove_if_exists(&path).with_context(|| format!("remove the stale {}", path.display()))?;
    let sock = UnixDatagram::bind(&path).with_context(|| format!("bind {}", path.display()))?;
    // Root only: whatever is sent here ends up in the operators' logs.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(QUEUE);
    let (recv_log, write_log) = (log.clone(), log.clone());
    thread::Builder::new().name("plugin-logs-in".into()).spawn(move || receive(&sock, &tx, &recv_log))?;
    thread::Builder::new().name("plugin-logs-out".into()).spawn(move || {
        let mut out = io::stdout();
        for line in rx {
            if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
                warn!(write_log, "cannot write plugin log records to stdout"; "error" => %e);
                return;
            }
        }
    })?;
    info!(log, "forwarding the plugin's log records to stdout"; "socket" => %path.display());
    Ok(Receiver { path })
}

fn receive(sock: &UnixDatagram, tx: &SyncSender<Vec<u8>>, log: &Logger) {
    // One more byte than a record may have: a longer datagram shows as too long.
    let mut buf = vec![0; MAX_RECORD + 1];
    let (mut dropped, mut malformed) = (0u64, 0u64);
    loop {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!(log, "stopped receiving the plugin's log records"; "error" => %e);
                return;
            }
        };
        let Some(line) = (n <= MAX_RECORD).then(|| marked(&buf[..n])).flatten() else {
            malformed += 1;
            warn!(log, "ignored a datagram that is not a plugin log record"; "bytes" => n, "ignored" => malformed);
            continue;
        };
        match tx.try_send(line) {
            Ok(()) if dropped > 0 => {
                warn!(log, "dropped plugin log records: stdout did not keep up"; "records" => dropped);
                dropped = 0;
            }
            Ok(()) => {}
            Err(TrySendError::Full(_)) => dropped += 1,
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

/// The record as one line with `"source": "plugin"`; `None` unless it is a JSON object.
fn marked(datagram: &[u8]) -> Option<Vec<u8>> {
    let mut record: Map<String, Value> = serde_json::from_slice(datagram).ok()?;
    record.insert("source".into(), "plugin".into());
    let mut line = serde_json::to_vec(&record).ok()?;
    line.push(b'\n');
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_their_fields_and_are_marked() {
        let rec =
            br#"{"msg":"cannot accelerate","level":"WARN","pod":"ns/p","containerID":"c1","component":"meshaccel"}"#;
        let line = marked(rec).unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&line).unwrap();
        for (k, want) in [("msg", "cannot accelerate"), ("level", "WARN"), ("pod", "ns/p"), ("containerID", "c1")] {
            assert_eq!(v[k], want, "{v}");
        }
        assert_eq!((v["component"].as_str(), v["source"].as_str()), (Some("meshaccel"), Some("plugin")));
        for not_a_record in [&b"[1]"[..], b"plain text", b"{\"msg\":", b""] {
            assert!(marked(not_a_record).is_none(), "{:?}", String::from_utf8_lossy(not_a_record));
        }
    }
}
