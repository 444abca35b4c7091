//! The node-level UEID: added at the first SMC ADD that asks for it, removed when meshaccel
//! is uninstalled from the node, but only if meshaccel added it. A UEID that was there
//! before (set by the operator, another product, a `smcd ueid add`) is never removed.
//!
//! What meshaccel added is recorded as one empty file per UEID under
//! `<stateDir>/smc-ueids/`; `meshaccel-installer uninstall` (and `meshaccel smc-uninstall`)
//! removes them through [`uninstall`].
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use meshaccel_node::files;
use serde::Serialize;

use super::genl::GenlError;
use super::smcgen::{check_ueid, SmcNl};

/// The directory of the UEIDs meshaccel added.
pub fn dir_of(state_dir: &Path) -> PathBuf {
    state_dir.join("smc-ueids")
}

/// Whether meshaccel recorded adding any UEID (so uninstall has something to do).
pub fn any_recorded(state_dir: &Path) -> bool {
    fs::read_dir(dir_of(state_dir)).is_ok_and(|mut d| d.next().is_some())
}

/// Makes sure `ueid` is in the kernel's table, recording it when this call added it. A
/// record that cannot be written undoes the add: an unrecorded UEID of ours would stay for
/// ever.
pub fn ensure(state_dir: &Path, nl: &mut SmcNl, ueid: &str) -> Result<()> {
    if !nl.add_ueid(ueid)? {
        return Ok(());
    }
    let dir = dir_of(state_dir);
    let recorded = fs::create_dir_all(&dir).and_then(|()| fs::write(dir.join(ueid), b""));
    if let Err(e) = recorded {
        let _ = nl.remove_ueid(ueid);
        return Err(e).with_context(|| format!("record UEID {ueid} under {}", dir.display()));
    }
    Ok(())
}

/// The UEIDs meshaccel recorded adding.
pub fn recorded(state_dir: &Path) -> Vec<String> {
    let Ok(dir) = fs::read_dir(dir_of(state_dir)) else { return vec![] };
    let mut v: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| check_ueid(n).is_ok()) // skips temporary and foreign files
        .collect();
    v.sort();
    v
}

/// What `meshaccel smc-uninstall` did.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Uninstalled {
    /// UEIDs meshaccel had added, now removed.
    pub removed_ueids: Vec<String>,
    /// UEIDs in the table that meshaccel did not add (left as they are).
    pub kept_ueids: Vec<String>,
    /// Per-pod SMC records kept on purpose: each pod's DEL still restores its sysctls and
    /// PNET entry from them (this process may not see the pods' netns).
    pub pod_records_kept: usize,
}

/// The node-level SMC part of uninstalling: removes the UEIDs meshaccel added.
pub fn uninstall(state_dir: &Path) -> Result<Uninstalled> {
    let mut out = Uninstalled {
        pod_records_kept: crate::record::records(state_dir).list().map_or(0, |v| v.len()),
        ..Default::default()
    };
    let ours = recorded(state_dir);
    let dir = dir_of(state_dir);
    match SmcNl::open() {
        Ok(mut nl) => {
            for ueid in &ours {
                nl.remove_ueid(ueid).with_context(|| format!("remove UEID {ueid}"))?;
                files::remove_if_exists(&dir.join(ueid))?;
                out.removed_ueids.push(ueid.clone());
            }
            out.kept_ueids = nl.ueids()?;
        }
        // No SMC module: its UEID table went with it, nothing is left to remove.
        Err(GenlError::NoFamily(_)) => {
            for ueid in &ours {
                files::remove_if_exists(&dir.join(ueid))?;
            }
        }
        Err(e) => return Err(e.into()),
    }
    // Left behind only if it holds something that is not ours; harmless then.
    let _ = fs::remove_dir(&dir);
    Ok(out)
}
