//! JSON logs on stderr, which `kubectl logs` shows.
use std::io;
use std::sync::Mutex;

use slog::{o, Drain, Level, Logger};

pub fn parse_level(s: &str) -> Option<Level> {
    s.parse().ok()
}

pub fn logger(level: Level) -> Logger {
    let json = Mutex::new(slog_json::Json::default(io::stderr())).map(slog::Fuse);
    Logger::root(slog::LevelFilter::new(json, level).fuse(), o!("component" => "meshaccel-installer"))
}
