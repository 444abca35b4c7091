//! The CNI operations. Each one validates all input first (config.rs), so a bad input
//! returns an error before anything is created.
use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{ensure, Context};
use meshaccel_installer::bpf;
use meshaccel_installer::pins::AttachmentId;
use rscni_plugin::cni::Cni;
use rscni_plugin::error::Error;
use rscni_plugin::types::{Args, CNIResult, NetConf};
use slog::{info, o, warn, Logger};

use crate::config::{FailurePolicy, Invocation, PluginConf, PodSettings};
use crate::logging;
use crate::sockmap;
use crate::state::{AttachmentState, StateDir};

/// Plugin-specific CNI error codes (the spec reserves 0–99).
pub mod codes {
    /// Acceleration could not be set up and `failurePolicy` is `closed`.
    pub const SETUP_FAILED: u32 = 100;
    /// DEL or GC could not remove what ADD created.
    pub const TEARDOWN_FAILED: u32 = 101;
    /// CHECK found the attachment different from what ADD set up.
    pub const CHECK_FAILED: u32 = 102;
}

pub struct Meshaccel;

fn log_for(conf: &PluginConf, cmd: &'static str, inv: Option<&Invocation>) -> Logger {
    let level = logging::parse_level(&conf.log.level).unwrap_or(slog::Level::Info);
    let root = logging::logger(&conf.log.file, level);
    match inv {
        Some(inv) => root.new(o!(
            "cmd" => cmd,
            "network" => inv.network.clone(),
            "containerID" => inv.container_id.clone(),
            "ifname" => inv.ifname.clone(),
            "pod" => format!("{}/{}", inv.pod.namespace.as_deref().unwrap_or("?"), inv.pod.name.as_deref().unwrap_or("?")),
        )),
        None => root.new(o!("cmd" => cmd)),
    }
}

fn custom(code: u32, msg: &str, err: &anyhow::Error) -> Error {
    Error::Custom(code, msg.to_string(), format!("{err:#}"))
}

fn prev_result(netconf: &NetConf, cmd: &str) -> Result<CNIResult, Error> {
    netconf.prev_result.clone().ok_or_else(|| {
        Error::InvalidNetworkConfig(format!(
            "meshaccel is a chained plugin: {cmd} needs a prevResult from the plugins before it"
        ))
    })
}

impl Cni for Meshaccel {
    fn add(&self, args: Args) -> Result<CNIResult, Error> {
        let inv = Invocation::from_args(&args)?;
        let prev = prev_result(args.config(), "ADD")?;
        let settings = PodSettings::resolve(&inv.conf, args.config())?;
        let log = log_for(&inv.conf, "ADD", Some(&inv));
        let sockmap_on = settings.sockmap && add_sockmap(&inv, &log)?;
        if inv.conf.smc.wanted(settings.smc) {
            if let Err(e) = crate::smc::attach::add(&inv, &log) {
                if sockmap_on {
                    let _ = teardown(&inv.conf, &inv.attachment); // nothing left after an error
                }
                return Err(e);
            }
        }
        Ok(prev)
    }

    fn del(&self, args: Args) -> Result<(), Error> {
        let inv = Invocation::for_teardown(&args)?;
        let log = log_for(&inv.conf, "DEL", Some(&inv));
        let had_smc = crate::smc::attach::del(&inv.conf, &inv.attachment)
            .map_err(|e| custom(codes::TEARDOWN_FAILED, "meshaccel: SMC teardown failed", &e))?;
        let had_link = teardown(&inv.conf, &inv.attachment)
            .map_err(|e| custom(codes::TEARDOWN_FAILED, "meshaccel: teardown failed", &e))?;
        info!(log, "released";
            "hadLink" => had_link,
            "hadSmc" => had_smc,
            "netns" => inv.netns.as_ref().map(|p| p.display().to_string()));
        Ok(())
    }

    fn check(&self, args: Args) -> Result<(), Error> {
        let inv = Invocation::from_args(&args)?;
        prev_result(args.config(), "CHECK")?;
        let settings = PodSettings::resolve(&inv.conf, args.config())?;
        let log = log_for(&inv.conf, "CHECK", Some(&inv));
        verify(&inv, settings, &log)
            .and_then(|()| crate::smc::attach::check(&inv, inv.conf.smc.wanted(settings.smc), &log))
            .map_err(|e| {
                warn!(log, "check failed"; "error" => format!("{e:#}"));
                custom(codes::CHECK_FAILED, "meshaccel: check failed", &e)
            })
    }

    fn status(&self, args: Args) -> Result<(), Error> {
        let conf = PluginConf::from_netconf(args.config())?;
        let log = log_for(&conf, "STATUS", None);
        if !conf.sockmap.enabled {
            return Ok(());
        }
        match bpf::ensure_loaded(&conf.pins()) {
            Ok(_) => Ok(()),
            // ADD would succeed (pass-through), so the network is available.
            Err(e) if conf.failure_policy == FailurePolicy::Open => {
                warn!(log, "BPF programs not loadable; pods will run on plain TCP"; "error" => format!("{e:#}"));
                Ok(())
            }
            Err(e) => Err(Error::PluginNotAvailable(format!(
                "meshaccel: BPF programs not loadable: {e:#}"
            ))),
        }
    }

    fn gc(&self, args: Args) -> Result<(), Error> {
        let conf = PluginConf::from_netconf(args.config())?;
        let log = log_for(&conf, "GC", None);
        let valid: HashSet<AttachmentId> = args
            .config()
            .valid_attachments
            .iter()
            .flatten()
            .filter_map(|a| AttachmentId::new(&a.container_id, &a.ifname).ok())
            .collect();
        let network = &args.config().name;
        crate::smc::attach::gc(&conf, network, &valid, &log);
        let records = StateDir(&conf.state_dir)
            .list()
            .map_err(|e| Error::IOFailure(format!("read {}: {e}", conf.state_dir.display())))?;
        // Only this network's records: another network may share the bpffs root.
        for (id, st) in records
            .into_iter()
            .filter(|(id, st)| &st.network == network && !valid.contains(id))
        {
            match teardown(&conf, &id) {
                Ok(_) => {
                    info!(log, "collected stale attachment"; "attachment" => %id, "podUID" => st.pod_uid)
                }
                // The spec asks GC to carry on; the next GC retries.
                Err(e) => {
                    warn!(log, "cannot collect attachment"; "attachment" => %id, "error" => format!("{e:#}"))
                }
            }
        }
        Ok(())
    }
}

/// ADD's sockmap part under the failure policy. Returns whether the pod is attached.
fn add_sockmap(inv: &Invocation, log: &Logger) -> Result<bool, Error> {
    match setup(inv, log) {
        Ok(st) => {
            info!(log, "pod accelerated"; "cgroup" => %st.cgroup.display(), "cgroupID" => st.cgroup_id);
            Ok(true)
        }
        Err(e) => match inv.conf.failure_policy {
            FailurePolicy::Open => {
                warn!(log, "cannot accelerate this pod; it keeps plain TCP"; "error" => format!("{e:#}"));
                Ok(false)
            }
            FailurePolicy::Closed => {
                slog::error!(log, "cannot accelerate this pod (failurePolicy closed)"; "error" => format!("{e:#}"));
                Err(custom(
                    codes::SETUP_FAILED,
                    "meshaccel: acceleration setup failed",
                    &e,
                ))
            }
        },
    }
}

/// ADD's work. On error, everything this call created is removed again.
fn setup(inv: &Invocation, log: &Logger) -> anyhow::Result<AttachmentState> {
    let uid = inv
        .pod
        .uid
        .as_deref()
        .context("CNI_ARGS has no K8S_POD_UID: cannot find the pod's cgroup")?;
    let cgroup_root = match &inv.conf.cgroup_root {
        Some(r) => r.clone(),
        None => crate::cgroup::default_root().context("no cgroup v2 mount found")?,
    };
    let cgroup = crate::cgroup::find_pod(&cgroup_root, uid)
        .with_context(|| format!("no cgroup for pod {uid} under {}", cgroup_root.display()))?;
    let pins = inv.conf.pins();
    if bpf::ensure_loaded(&pins)? {
        info!(log, "loaded and pinned the BPF programs"; "root" => %pins.root().display());
    }
    // Validated when the conf was parsed, so this cannot fail here.
    let pod_config = inv.conf.sockmap.pod_config().map_err(anyhow::Error::msg)?;
    let result = sockmap::attach(&pins, &inv.attachment, &cgroup, pod_config).and_then(|cgroup_id| {
        let st = AttachmentState {
            network: inv.network.clone(),
            container_id: inv.container_id.clone(),
            ifname: inv.ifname.clone(),
            pod_uid: uid.to_string(),
            pod_namespace: inv.pod.namespace.clone(),
            pod_name: inv.pod.name.clone(),
            cgroup: cgroup.clone(),
            cgroup_id,
            sockmap: true,
        };
        StateDir(&inv.conf.state_dir)
            .save(&inv.attachment, &st)
            .context("save attachment state")?;
        Ok(st)
    });
    if result.is_err() {
        if let Err(e) = teardown(&inv.conf, &inv.attachment) {
            warn!(log, "rollback incomplete"; "error" => format!("{e:#}"));
        }
    }
    result
}

/// Removes an attachment's link and record. Idempotent; needs neither netns nor
/// prevResult. Returns whether a link was attached.
fn teardown(conf: &PluginConf, id: &AttachmentId) -> anyhow::Result<bool> {
    let had_link = sockmap::detach(&conf.pins(), id)?;
    StateDir(&conf.state_dir)
        .remove(id)
        .context("remove attachment state")?;
    Ok(had_link)
}

/// CHECK's work: the live kernel state matches what ADD recorded and the conf asks for.
fn verify(inv: &Invocation, settings: PodSettings, log: &Logger) -> anyhow::Result<()> {
    let pins = inv.conf.pins();
    let record = StateDir(&inv.conf.state_dir).load(&inv.attachment)?;
    match (settings.sockmap, record) {
        (false, None) => {
            ensure!(
                bpf::pod_link(&pins, &inv.attachment)?.is_none(),
                "pod is opted out but a sock_ops link is pinned"
            );
            Ok(())
        }
        (false, Some(_)) => anyhow::bail!("pod is opted out but was accelerated"),
        (true, None) if inv.conf.failure_policy == FailurePolicy::Open => {
            info!(log, "pod is not accelerated (ADD fell back to plain TCP)");
            Ok(())
        }
        (true, None) => anyhow::bail!("pod should be accelerated but has no attachment"),
        (true, Some(st)) => {
            let expected_cgroup: Option<PathBuf> = inv
                .conf
                .cgroup_root
                .clone()
                .or_else(crate::cgroup::default_root)
                .and_then(|root| crate::cgroup::find_pod(&root, &st.pod_uid));
            ensure!(
                expected_cgroup.as_ref() == Some(&st.cgroup),
                "pod cgroup is now {expected_cgroup:?}, attachment is on {}",
                st.cgroup.display()
            );
            let want = inv.conf.sockmap.pod_config().map_err(anyhow::Error::msg)?;
            sockmap::verify(&pins, &inv.attachment, &st.cgroup, st.cgroup_id, &want)
        }
    }
}
