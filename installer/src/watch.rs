//! Waiting for something to do: a change in a watched directory (inotify), a termination
//! signal (signalfd), or the periodic re-check.
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// How long to keep collecting events after the first one, so that one rewrite (create,
/// write, rename) costs one reconcile.
const SETTLE: Duration = Duration::from_millis(50);
/// How often to retry watching a directory that does not exist yet.
const RETRY_MISSING: Duration = Duration::from_secs(2);

/// The signals that end the daemon. They must be blocked in every thread, so
/// [`block_signals`] runs before any thread is spawned and signalfd receives them.
fn signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set
}

pub fn block_signals() -> Result<()> {
    signals().thread_block().context("block SIGTERM/SIGINT")
}

#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    Changed,
    Timeout,
    Signal(Signal),
}

pub struct Watcher {
    inotify: Inotify,
    signals: SignalFd,
    dirs: Vec<PathBuf>,
    watched: HashMap<WatchDescriptor, PathBuf>,
}

fn dir_events() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
}

impl Watcher {
    pub fn new(dirs: Vec<PathBuf>) -> Result<Self> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).context("inotify_init")?;
        let signals =
            SignalFd::with_flags(&signals(), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).context("signalfd")?;
        let mut w = Self { inotify, signals, dirs, watched: HashMap::new() };
        w.watch_missing();
        Ok(w)
    }

    /// Watches every directory not watched yet; a missing one is retried on the next wait.
    fn watch_missing(&mut self) {
        for dir in &self.dirs {
            if self.watched.values().any(|d| d == dir) {
                continue;
            }
            if let Ok(wd) = self.inotify.add_watch(dir, dir_events()) {
                self.watched.insert(wd, dir.clone());
            }
        }
    }

    /// Reads pending events; returns whether there were any. A removed or moved directory
    /// loses its watch, which [`Self::watch_missing`] re-creates once it is back.
    fn drain(&mut self) -> bool {
        let mut any = false;
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            any = true;
            for ev in events {
                if ev.mask.intersects(AddWatchFlags::IN_IGNORED | AddWatchFlags::IN_MOVE_SELF)
                    && self.watched.remove(&ev.wd).is_some()
                {
                    let _ = self.inotify.rm_watch(ev.wd);
                }
            }
        }
        any
    }

    pub fn wait(&mut self, timeout: Duration) -> Result<Wake> {
        self.watch_missing();
        let timeout = if self.watched.len() < self.dirs.len() { timeout.min(RETRY_MISSING) } else { timeout };
        let mut fds = [
            PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN),
        ];
        let n = match poll(&mut fds, PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX)) {
            Err(nix::errno::Errno::EINTR) => 0,
            other => other.context("poll")?,
        };
        if n == 0 {
            return Ok(Wake::Timeout);
        }
        if let Some(info) = self.signals.read_signal().context("read signalfd")? {
            let sig = Signal::try_from(info.ssi_signo as i32).unwrap_or(Signal::SIGTERM);
            return Ok(Wake::Signal(sig));
        }
        if self.drain() {
            std::thread::sleep(SETTLE);
            self.drain();
            return Ok(Wake::Changed);
        }
        Ok(Wake::Timeout)
    }
}
