//! The CNI verbs' SMC part: per-attachment records (`<stateDir>/smc/<attachment>.json`)
//! and the failure policy. Kept apart from the sockmap record so each feature can be on
//! without the other and DEL undoes exactly what ADD did.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use meshaccel_installer::pins::AttachmentId;
use rscni_plugin::error::Error;
use serde::{Deserialize, Serialize};
use slog::{info, warn, Logger};

use super::{SmcError, SmcState};
use crate::commands::codes;
use crate::config::{FailurePolicy, Invocation, PluginConf};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SmcRecord {
    pub network: String,
    #[serde(flatten)]
    pub state: SmcState,
}

pub struct Records(PathBuf);

impl Records {
    pub fn new(state_dir: &Path) -> Self {
        Self(state_dir.join("smc"))
    }

    fn file(&self, id: &AttachmentId) -> PathBuf {
        self.0.join(format!("{id}.json"))
    }

    pub fn save(&self, id: &AttachmentId, r: &SmcRecord) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.0)?;
        let tmp = self.file(id).with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(r)?)?;
        std::fs::rename(tmp, self.file(id))
    }

    pub fn load(&self, id: &AttachmentId) -> std::io::Result<Option<SmcRecord>> {
        match std::fs::read(self.file(id)) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn remove(&self, id: &AttachmentId) -> std::io::Result<()> {
        match std::fs::remove_file(self.file(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn list(&self) -> Vec<(AttachmentId, SmcRecord)> {
        let Ok(dir) = std::fs::read_dir(&self.0) else { return vec![] };
        let mut v: Vec<_> = dir
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let id = AttachmentId::from_dir_name(name.strip_suffix(".json")?)?;
                Some((id.clone(), self.load(&id).ok()??))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

fn custom(code: u32, msg: &str, detail: String) -> Error {
    Error::Custom(code, msg.to_string(), detail)
}

/// ADD's SMC part. `Ok` also when SMC could not be set up and the policy is open.
pub fn add(inv: &Invocation, log: &Logger) -> Result<(), Error> {
    let netns = inv
        .netns
        .as_deref()
        .ok_or_else(|| Error::InvalidEnvValue("ADD without CNI_NETNS: cannot set up SMC".into()))?;
    let req = super::Request {
        conf: &inv.conf.smc,
        bpffs_root: &inv.conf.bpffs_root,
        state_dir: &inv.conf.state_dir,
        netns,
        ifname: &inv.ifname,
    };
    match super::setup(&req, log) {
        Ok(state) => {
            let record = SmcRecord { network: inv.network.clone(), state };
            if let Err(e) = Records::new(&inv.conf.state_dir).save(&inv.attachment, &record) {
                let _ = super::teardown(&inv.conf.bpffs_root, &record.state);
                return Err(custom(codes::SETUP_FAILED, "meshaccel: cannot record SMC state", e.to_string()));
            }
            info!(log, "SMC on"; "mode" => ?record.state.mode, "pnetId" => &record.state.pnet_id,
                "rdmaDevice" => &record.state.rdma_device);
            Ok(())
        }
        Err(SmcError::Config(why)) => Err(Error::InvalidNetworkConfig(format!("meshaccel smc: {why}"))),
        Err(SmcError::Unavailable(e)) => match inv.conf.failure_policy {
            FailurePolicy::Open => {
                warn!(log, "SMC not set up; the pod keeps plain TCP"; "error" => format!("{e:#}"));
                Ok(())
            }
            FailurePolicy::Closed => Err(custom(codes::SETUP_FAILED, "meshaccel: SMC setup failed", format!("{e:#}"))),
        },
    }
}

/// Undoes one attachment's SMC state; idempotent.
pub fn del(conf: &PluginConf, id: &AttachmentId) -> anyhow::Result<bool> {
    let records = Records::new(&conf.state_dir);
    let Some(r) = records.load(id)? else { return Ok(false) };
    super::teardown(&conf.bpffs_root, &r.state)?;
    records.remove(id)?;
    Ok(true)
}

/// CHECK's SMC part.
pub fn check(inv: &Invocation, wanted: bool, log: &Logger) -> anyhow::Result<()> {
    match (wanted, Records::new(&inv.conf.state_dir).load(&inv.attachment)?) {
        (false, None) => Ok(()),
        (false, Some(_)) => anyhow::bail!("SMC is off for this pod but ADD set it up"),
        (true, None) if inv.conf.failure_policy == FailurePolicy::Open => {
            info!(log, "SMC not set up for this pod (ADD fell back to plain TCP)");
            Ok(())
        }
        (true, None) => anyhow::bail!("SMC should be on for this pod but ADD did not set it up"),
        (true, Some(r)) => super::verify(&inv.conf.bpffs_root, &inv.conf.smc, &r.state),
    }
}

/// GC's SMC part: this network's records of attachments the runtime no longer has.
pub fn gc(conf: &PluginConf, network: &str, valid: &HashSet<AttachmentId>, log: &Logger) {
    for (id, _) in Records::new(&conf.state_dir).list().into_iter().filter(|(id, r)| r.network == network && !valid.contains(id)) {
        match del(conf, &id) {
            Ok(_) => info!(log, "collected stale SMC attachment"; "attachment" => %id),
            Err(e) => warn!(log, "cannot collect SMC attachment"; "attachment" => %id, "error" => format!("{e:#}")),
        }
    }
}
