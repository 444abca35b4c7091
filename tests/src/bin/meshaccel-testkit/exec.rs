//! Enters a pod and runs a command there. A socket's cgroup is fixed when it is created and
//! threads cannot move between cgroup v2 domains, so pod traffic must come from processes
//! that joined the pod's cgroup (and netns) before they did anything else.
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};

use crate::args::Args;

pub fn main(argv: &[String]) -> Result<()> {
    let Some(sep) = argv.iter().position(|a| a == "--") else { bail!("exec: missing -- before the command") };
    let args = Args::parse(&argv[..sep])?;
    let (program, rest) = argv[sep + 1..].split_first().context("exec: no command")?;
    let cgroup: String = args.get("cgroup")?;
    let procs = format!("{cgroup}/cgroup.procs");
    fs::write(&procs, std::process::id().to_string()).with_context(|| format!("join {procs}"))?;
    let netns: String = args.get("netns")?;
    let ns = File::open(&netns).with_context(|| format!("open {netns}"))?;
    setns(&ns, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns {netns}"))?;
    drop(ns);
    let err = Command::new(program).args(rest).exec();
    Err(err).with_context(|| format!("exec {program}"))
}
