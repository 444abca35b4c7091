//! JSON logs through slog, to an optional file and to stderr; never to stdout, which
//! carries the plugin's CNI result (and which `kubectl logs` does not need: it shows stderr).
use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Mutex;

use slog::{o, Drain, Level, Logger};

/// slog's level names, plus `warn`.
pub fn parse_level(s: &str) -> Option<Level> {
    match s {
        "critical" => Some(Level::Critical),
        "error" => Some(Level::Error),
        "warning" | "warn" => Some(Level::Warning),
        "info" => Some(Level::Info),
        "debug" => Some(Level::Debug),
        "trace" => Some(Level::Trace),
        _ => None,
    }
}

/// One `write(2)` per record (buffered, flushed at its end): slog-json writes each token
/// separately, which cost ~100 syscalls per record and, on stderr, as many wake-ups of the
/// runtime reading it; and concurrent invocations appending to one file keep whole lines.
fn json<W: io::Write + Send + 'static>(w: W) -> impl Drain<Ok = (), Err = slog::Never> {
    let json = slog_json::Json::new(io::BufWriter::with_capacity(8192, w)).set_flush(true).add_default_keys().build();
    Mutex::new(json).map(slog::Fuse)
}

/// A logger writing to `file` (none if empty; created with its directory; skipped if it
/// cannot be opened, which is itself logged) and stderr, at `level` and above; every record
/// names the `component` and its pid.
pub fn logger(component: &'static str, file: &str, level: Level) -> Logger {
    let stderr = slog::LevelFilter::new(json(io::stderr()), level).fuse();
    let opened = (!file.is_empty()).then(|| {
        if let Some(dir) = Path::new(file).parent() {
            let _ = fs::create_dir_all(dir);
        }
        OpenOptions::new().create(true).append(true).open(file)
    });
    let base = o!("component" => component, "pid" => std::process::id());
    match opened {
        Some(Ok(f)) => {
            let to_file = slog::LevelFilter::new(json(f), level).fuse();
            Logger::root(slog::Duplicate::new(to_file, stderr).fuse(), base)
        }
        Some(Err(e)) => {
            let log = Logger::root(stderr, base);
            slog::warn!(log, "cannot open log file, logging to stderr only"; "file" => file, "error" => %e);
            log
        }
        None => Logger::root(stderr, base),
    }
}
