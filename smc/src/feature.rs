//! SMC as a [`Feature`] of the CNI verbs: [`crate::pod`]'s work, recorded per attachment
//! ([`crate::record`]).
use meshaccel_node::conf::{ConfError, PluginConf};
use meshaccel_node::feature::{Feature, Pod, SetupError};
use meshaccel_node::pins::AttachmentId;
use slog::{info, Logger};

use crate::pod::{self, SmcError};
use crate::record::{records, SmcRecord};

pub struct Smc;

impl Feature for Smc {
    fn name(&self) -> &'static str {
        "SMC"
    }

    /// The annotation wins over the network default; mode `off` wins over both.
    fn wanted(&self, pod: &Pod) -> bool {
        pod.conf.smc.wanted(pod.settings.smc)
    }

    fn set_up(&self, pod: &Pod, log: &Logger) -> Result<(), SetupError> {
        let conf = pod.conf;
        let netns = pod
            .netns
            .ok_or_else(|| SetupError::Refused(ConfError::Env("ADD without CNI_NETNS: cannot set up SMC".into())))?;
        let state = pod::setup(pod, netns, log).map_err(|e| match e {
            SmcError::Config(why) => SetupError::Refused(ConfError::Network(format!("meshaccel smc: {why}"))),
            SmcError::Unavailable(e) => SetupError::Unavailable(e),
        })?;
        let record = SmcRecord { network: pod.network.to_string(), state };
        if let Err(e) = records(&conf.state_dir).save(pod.attachment, &record) {
            let _ = pod::teardown(&conf.bpffs_root, &record.state);
            return Err(SetupError::Unavailable(anyhow::Error::from(e).context("record SMC state")));
        }
        info!(log, "SMC on"; "mode" => ?record.state.mode, "pnetId" => &record.state.pnet_id,
            "rdmaDevice" => &record.state.rdma_device);
        Ok(())
    }

    fn tear_down(&self, conf: &PluginConf, id: &AttachmentId) -> anyhow::Result<bool> {
        let store = records(&conf.state_dir);
        let Some(r) = store.load(id)? else { return Ok(false) };
        pod::teardown(&conf.bpffs_root, &r.state)?;
        store.remove(id)?;
        Ok(true)
    }

    fn recorded(&self, conf: &PluginConf, id: &AttachmentId) -> anyhow::Result<bool> {
        Ok(records(&conf.state_dir).load(id)?.is_some())
    }

    fn verify(&self, pod: &Pod) -> anyhow::Result<()> {
        anyhow::ensure!(self.verify_recorded(pod)?, "no SMC record");
        Ok(())
    }

    /// One read of the record: CHECK verifies the record it found.
    fn verify_recorded(&self, pod: &Pod) -> anyhow::Result<bool> {
        let Some(r) = records(&pod.conf.state_dir).load(pod.attachment)? else { return Ok(false) };
        pod::verify(&pod.conf.state_dir, &pod.conf.bpffs_root, &pod.conf.smc, &r.state)?;
        Ok(true)
    }

    fn attachments(&self, conf: &PluginConf, network: &str) -> anyhow::Result<Vec<AttachmentId>> {
        let all = records(&conf.state_dir).list()?;
        Ok(all.into_iter().filter(|(_, r)| r.network == network).map(|(id, _)| id).collect())
    }
}
