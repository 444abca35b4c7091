//! The node's SMC gate: pods already on SMC follow the node's RDMA reachability verdict
//! ([`crate::reach`]). While the last verdict failed, their new sockets are plain TCP
//! (suspended); once a later one passes, they are SMC again (active) — without restarting
//! or re-ADDing a pod. Connections that exist keep what they have.
//!
//! * `bpf` mode: the reserved key [`fmodret::SUSPEND_KEY`] in the TCP→SMC program's map —
//!   one map update suspends or resumes every selected netns at once.
//! * `tcp2smc` mode: each such pod's `net.smc.tcp2smc`, set to 0 or 1 in its netns when the
//!   gate changes.
//!
//! What the gate is set to, since when and why is `<stateDir>/smc-gate.json`. [`follow`] runs
//! under the verdict's lock, right after a verdict is read or stored, so the gate is always
//! the last stored verdict's.
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use meshaccel_node::files;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use slog::{info, warn, Logger};

use crate::convert::{Mode, TCP2SMC_NAME};
use crate::fmodret::{self, SmcPins};
use crate::pod::SmcState;
use crate::record::records;
use crate::{netns, sysctl};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    pub suspended: bool,
    /// Unix seconds of the last change.
    pub since: u64,
    /// The verdict's detail when it changed.
    pub reason: String,
}

fn file(state_dir: &Path) -> PathBuf {
    state_dir.join("smc-gate.json")
}

pub fn load(state_dir: &Path) -> Option<Gate> {
    serde_json::from_slice(&fs::read(file(state_dir)).ok()?).ok()
}

/// Whether SMC pods are suspended now (no gate file yet: active).
pub fn is_suspended(state_dir: &Path) -> bool {
    load(state_dir).is_some_and(|g| g.suspended)
}

fn store(state_dir: &Path, g: &Gate) -> Result<()> {
    fs::create_dir_all(state_dir)?;
    let tmp = file(state_dir).with_extension(format!("json.{}.tmp", std::process::id()));
    fs::write(&tmp, serde_json::to_vec_pretty(g)?)?;
    fs::rename(tmp, file(state_dir)).context("store the SMC gate")
}

/// Uninstall: the pins (and so the suspend key) are gone, and so is the gate.
pub fn forget(state_dir: &Path) -> Result<()> {
    files::remove_if_exists(&file(state_dir)).map(drop).context("remove the SMC gate")
}

/// Sets the gate to follow a verdict: suspended unless `verified`. The program's map is set
/// every time (one idempotent update: it also heals a map reloaded since); the tcp2smc pods
/// are visited only when the gate changes.
pub fn follow(state_dir: &Path, bpffs_root: &Path, verified: bool, reason: &str, log: &Logger) -> Result<()> {
    let suspend = !verified;
    let pins = SmcPins::new(bpffs_root);
    if pins.is_loaded() {
        // An older program does not know the suspend key: replace it first.
        if fmodret::ensure_loaded(&pins)? {
            info!(log, "replaced the TCP→SMC program with this version's (it honours the node's SMC gate)");
        }
        fmodret::set_suspended(&pins, suspend)?;
    }
    let old = load(state_dir);
    if old.as_ref().map(|g| g.suspended) == Some(suspend) {
        return Ok(());
    }
    let mut pods = 0;
    for (id, r) in records(state_dir).list().context("list SMC records")? {
        if r.state.mode != Mode::Tcp2smc {
            continue;
        }
        match set_tcp2smc(&r.state, !suspend) {
            Ok(true) => pods += 1,
            Ok(false) => {}
            Err(e) => warn!(log, "cannot set net.smc.tcp2smc of an SMC pod"; "attachment" => id.as_str(),
                "error" => format!("{e:#}")),
        }
    }
    let since = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    store(state_dir, &Gate { suspended: suspend, since, reason: reason.to_string() })?;
    if suspend {
        warn!(log, "SMC suspended on this node: new sockets of SMC pods are plain TCP until RDMA is verified again";
            "reason" => reason, "tcp2smcPods" => pods);
    } else if old.is_some() {
        info!(log, "SMC active again on this node: new sockets of SMC pods use SMC"; "reason" => reason,
            "tcp2smcPods" => pods);
    }
    Ok(())
}

/// `net.smc.tcp2smc` of one pod, if its netns is still the one ADD set up. Returns whether
/// it was written.
fn set_tcp2smc(st: &SmcState, on: bool) -> Result<bool> {
    if st.netns.as_os_str().is_empty() || !st.netns.exists() {
        return Ok(false);
    }
    let cookie = st.netns_cookie;
    netns::run_in(&st.netns, move || {
        if netns::current_cookie()? != cookie {
            return Ok(false);
        }
        sysctl::write(TCP2SMC_NAME, if on { "1" } else { "0" }).map(|()| true)
    })
}

/// What `meshaccel status` and `doctor` report: the gate, and whether the program's map
/// agrees with it.
pub fn report(state_dir: &Path, bpffs_root: &Path) -> Value {
    let pins = SmcPins::new(bpffs_root);
    let program = pins.is_loaded().then(|| fmodret::is_suspended(&pins).ok()).flatten();
    let g = load(state_dir);
    let suspended = g.as_ref().is_some_and(|g| g.suspended);
    json!({
        "state": if suspended { "suspended" } else { "active" },
        "since": g.as_ref().map(|g| g.since),
        "reason": g.as_ref().map(|g| g.reason.clone()),
        // null: no TCP→SMC program pinned (no bpf-mode pod yet).
        "programSuspended": program,
        "programCurrent": pins.is_loaded().then(|| fmodret::is_current(&pins)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SmcRecord;
    use meshaccel_node::pins::AttachmentId;

    fn log() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    /// Without pins (no bpf-mode pod) the gate is the state file alone; a tcp2smc pod whose
    /// netns is gone is skipped, not an error.
    #[test]
    fn follows_verdicts_and_records_only_changes() {
        let dir = std::env::temp_dir().join(format!("meshaccel-gate-{}", std::process::id()));
        let (state, bpffs) = (dir.join("state"), dir.join("no-bpffs"));
        let gone = SmcState { mode: Mode::Tcp2smc, netns: dir.join("gone"), netns_cookie: 7, ..Default::default() };
        let id = AttachmentId::new("cid", "eth0").unwrap();
        records(&state).save(&id, &SmcRecord { network: "n".into(), state: gone }).unwrap();
        assert!(!is_suspended(&state), "no gate yet: active");
        assert_eq!(report(&state, &bpffs)["state"], "active");

        follow(&state, &bpffs, false, "peer: no connect response", &log()).unwrap();
        let g = load(&state).unwrap();
        assert!(g.suspended && is_suspended(&state));
        assert_eq!(g.reason, "peer: no connect response");
        let r = report(&state, &bpffs);
        assert_eq!((r["state"].as_str(), r["programSuspended"].is_null()), (Some("suspended"), true));

        follow(&state, &bpffs, false, "another failure", &log()).unwrap();
        assert_eq!(load(&state).unwrap(), g, "no change: since and reason stay");
        follow(&state, &bpffs, true, "answered", &log()).unwrap();
        assert!(!is_suspended(&state));
        assert_eq!(load(&state).unwrap().reason, "answered");

        forget(&state).unwrap();
        assert!(load(&state).is_none());
        fs::remove_dir_all(&dir).unwrap();
    }
}
