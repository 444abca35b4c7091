//! `meshaccel-installer` on the test node, as the DaemonSet runs it: it loads the programs,
//! copies the plugin into the CNI bin dir, chains it into the primary conflist and adopts
//! the pods already running.
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::{poll, terminate, Containerd};
use crate::binaries;

/// A running `meshaccel-installer run`; killed on drop if not stopped.
pub struct Installer {
    child: Option<Child>,
    log: PathBuf,
    ready: PathBuf,
}

impl Containerd {
    /// The installer with this node's paths; `verb` is `run`, `install` or `uninstall`.
    fn installer_command(&self, verb: &str) -> Command {
        let mut cmd = Command::new(binaries::installer());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("MESHACCEL_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg(verb)
            .arg("--cni-bin-dirs")
            .arg(self.bin_dir())
            .arg("--cni-conf-dir")
            .arg(self.conf_dir())
            .arg("--plugin-binary")
            .arg(binaries::meshaccel())
            .arg("--bpffs-root")
            .arg(self.pins().root())
            .args(["--mount-bpffs", "false", "--listen", "", "--log-level", "debug"])
            .arg("--plugin-conf")
            .arg(self.plugin_settings().to_string())
            .arg("--cri-socket")
            .arg(self.socket())
            .stdin(Stdio::null());
        cmd
    }

    /// Starts the daemon and waits until it is ready and has adopted the running pods.
    pub fn start_installer(&self) -> Result<Installer> {
        static STARTS: AtomicU32 = AtomicU32::new(0);
        let log = self.dir().join(format!("installer-{}.log", STARTS.fetch_add(1, Ordering::Relaxed)));
        let ready = self.dir().join("installer-ready");
        let _ = fs::remove_file(&ready);
        let out = File::create(&log)?;
        let child = self
            .installer_command("run")
            .arg("--ready-file")
            .arg(&ready)
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawn meshaccel-installer")?;
        let mut inst = Installer { child: Some(child), log, ready };
        inst.wait_started()?;
        Ok(inst)
    }

    /// `meshaccel-installer run` killed with SIGKILL at a fault point (debug builds,
    /// `meshaccel_node::fault`), as an OOM kill or a node's crash would: an error if it does
    /// not get there within 30 s.
    pub fn installer_killed_at(&self, point: &str) -> Result<()> {
        let mut child = self
            .installer_command("run")
            .env("MESHACCEL_FAULT", point)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn meshaccel-installer")?;
        let exited = poll(Duration::from_secs(30), || Ok(child.try_wait()?));
        if exited.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let status = exited.with_context(|| format!("meshaccel-installer never reached {point}"))?;
        ensure!(status.signal() == Some(libc::SIGKILL), "meshaccel-installer exited {status}, not killed at {point}");
        Ok(())
    }

    /// `meshaccel-installer uninstall`: removes the chain entry, the plugin, every pin and
    /// record.
    pub fn uninstall(&self) -> Result<()> {
        let out = self.installer_command("uninstall").output()?;
        ensure!(out.status.success(), "uninstall failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        Ok(())
    }
}

impl Installer {
    fn wait_started(&mut self) -> Result<()> {
        // Readiness comes first; adoption follows the first correct install.
        let child = self.child.as_mut().unwrap();
        let (ready, log) = (&self.ready, &self.log);
        poll(Duration::from_secs(30), || {
            if let Some(status) = child.try_wait()? {
                bail!("exited ({status})");
            }
            Ok((ready.exists() && read(log).contains("adopted running pods")).then_some(()))
        })
        .with_context(|| format!("meshaccel-installer not ready and done adopting:\n{}", self.log_text()))
    }

    pub fn log_text(&self) -> String {
        read(&self.log)
    }

    /// What adoption did with each sandbox, from the daemon's log: sandbox id → outcome
    /// (`Adopted { .. }`, `OptedOut`, `Failed(..)`, …).
    pub fn adoptions(&self) -> BTreeMap<String, String> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["msg"] == "running pod")
            .filter_map(|v| Some((v["sandbox"].as_str()?.to_string(), v["outcome"].as_str()?.to_string())))
            .collect()
    }

    /// SIGTERM, as the kubelet stops the DaemonSet pod; it must exit cleanly.
    pub fn stop(mut self) -> Result<()> {
        let status = terminate(self.child.take().unwrap(), Duration::from_secs(10))
            .with_context(|| format!("meshaccel-installer:\n{}", self.log_text()))?;
        ensure!(status.success(), "meshaccel-installer exited {status} on SIGTERM:\n{}", self.log_text());
        Ok(())
    }
}

fn read(log: &Path) -> String {
    fs::read_to_string(log).unwrap_or_default()
}

impl Drop for Installer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("meshaccel-installer log:\n{}", self.log_text());
            }
        }
    }
}
