//! JSON logs through slog, to an optional file and to stderr; never to stdout, which
//! carries the plugin's CNI result. The plugin's records also go to the installer
//! ([`crate::log_forward`]), which writes them to its container's stdout for `kubectl logs`.
use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use slog::{o, Drain, Level, Logger, SendSyncRefUnwindSafeDrain};

use crate::log_forward::Tee;

/// A drain several loggers (or drains) share.
pub(crate) type Shared = Arc<dyn SendSyncRefUnwindSafeDrain<Ok = (), Err = slog::Never>>;

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
pub(crate) fn json<W: io::Write + Send + 'static>(w: W) -> impl Drain<Ok = (), Err = slog::Never> {
    let json = slog_json::Json::new(io::BufWriter::with_capacity(8192, w)).set_flush(true).add_default_keys().build();
    Mutex::new(json).map(slog::Fuse)
}

/// The file (none if empty; created with its directory) and stderr, at `level` and above;
/// the error if the file cannot be opened.
fn local(file: &str, level: Level) -> (Shared, Option<io::Error>) {
    let stderr = slog::LevelFilter::new(json(io::stderr()), level).fuse();
    let opened = (!file.is_empty()).then(|| {
        if let Some(dir) = Path::new(file).parent() {
            let _ = fs::create_dir_all(dir);
        }
        OpenOptions::new().create(true).append(true).open(file)
    });
    match opened {
        Some(Ok(f)) => {
            let to_file = slog::LevelFilter::new(json(f), level).fuse();
            (Arc::new(slog::Duplicate::new(to_file, stderr).fuse()), None)
        }
        Some(Err(e)) => (Arc::new(stderr), Some(e)),
        None => (Arc::new(stderr), None),
    }
}

/// Every record names the `component` and its pid; a log file that cannot be opened is
/// itself logged.
fn root(component: &'static str, drain: Shared, file: &str, open_error: Option<io::Error>) -> Logger {
    let log = Logger::root(drain, o!("component" => component, "pid" => std::process::id()));
    if let Some(e) = open_error {
        slog::warn!(log, "cannot open log file, logging to stderr only"; "file" => file, "error" => %e);
    }
    log
}

/// A logger writing to `file` (none if empty; created with its directory; skipped if it
/// cannot be opened, which is itself logged) and stderr, at `level` and above.
pub fn logger(component: &'static str, file: &str, level: Level) -> Logger {
    let (drain, open_error) = local(file, level);
    root(component, drain, file, open_error)
}

/// [`logger`], also sending each record to the installer listening in `state_dir`, if one
/// is (see [`crate::log_forward`]): for the plugin's CNI calls.
pub fn plugin_logger(component: &'static str, file: &str, level: Level, state_dir: &Path) -> Logger {
    let (local, open_error) = local(file, level);
    let drain = match Tee::new(component, local.clone(), level, state_dir) {
        Some(tee) => Arc::new(tee),
        None => local,
    };
    root(component, drain, file, open_error)
}
