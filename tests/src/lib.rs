//! Test harness for meshaccel on the real kernel: pods made of network namespaces, kubelet-style
//! cgroups and the real CNI chain (bridge + host-local, then the meshaccel plugin), plus the
//! `meshaccel-testkit` helper that runs traffic inside them.
//!
//! Every resource is uniquely named per test (so tests run in parallel, also across test
//! binaries) and removed on drop, also when the test panics.
pub mod binaries;
pub mod cgroup;
pub mod cni;
pub mod containerd;
pub mod manifests;
pub mod mesh;
pub mod meshed;
pub mod names;
pub mod netns;
pub mod node;
pub mod oci;
pub mod payload;
pub mod pod;
pub mod process;
pub mod program;
pub mod scale;
pub mod scenario;

use std::process::Command;

use anyhow::{bail, Context, Result};

pub use node::{Chain, Counters, TestNode};
pub use pod::Pod;
pub use process::Proc;

/// Runs a command to completion; its stdout on success, an error with stderr otherwise.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output().with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!("{program} {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs every cleanup step even when earlier ones fail, and reports the failures together.
#[derive(Default)]
pub(crate) struct Cleanup {
    errors: Vec<String>,
}

impl Cleanup {
    pub fn step(&mut self, what: &str, f: impl FnOnce() -> Result<()>) {
        if let Err(e) = f() {
            self.errors.push(format!("{what}: {e:#}"));
        }
    }

    pub fn into_result(self) -> Result<()> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            bail!("{}", self.errors.join("\n"))
        }
    }

    /// For Drop: a failed cleanup fails the test (leaks and DEL failures are bugs), unless
    /// the test is failing already.
    pub fn finish(self, owner: &str) {
        if let Err(e) = self.into_result() {
            if std::thread::panicking() {
                eprintln!("cleanup of {owner}: {e}");
            } else {
                panic!("cleanup of {owner}: {e}");
            }
        }
    }
}
