//! Enters a pod and runs a command there. A socket's cgroup is fixed when it is created and
//! threads cannot move between cgroup v2 domains, so pod traffic must come from processes
//! that joined the pod's cgroup (and netns) before they did anything else.
use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};

/// `exec --netns PATH --cgroup DIR -- CMD [ARGS…]`.
#[derive(clap::Args, Debug)]
pub struct Exec {
    /// The pod's network namespace (a bind mount of it).
    #[arg(long, value_name = "PATH")]
    netns: String,
    /// The (container) cgroup to join first.
    #[arg(long, value_name = "DIR")]
    cgroup: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

pub fn main(a: &Exec) -> Result<()> {
    let (program, rest) = a.command.split_first().context("exec: no command")?;
    let procs = format!("{}/cgroup.procs", a.cgroup);
    fs::write(&procs, std::process::id().to_string()).with_context(|| format!("join {procs}"))?;
    let ns = File::open(&a.netns).with_context(|| format!("open {}", a.netns))?;
    setns(&ns, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns {}", a.netns))?;
    drop(ns);
    let err = Command::new(program).args(rest).exec();
    Err(err).with_context(|| format!("exec {}", program.to_string_lossy()))
}
