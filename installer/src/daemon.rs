//! The installer's verbs: `run` (install, adopt running pods, keep the install correct
//! until SIGTERM, then remove the chain entry), `install` (one pass) and `uninstall`
//! (everything, pins and per-pod links included).
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use meshaccel_installer::adopt::{self, AdoptConfig, Outcome};
use meshaccel_installer::confdir::{self, Chained, Change};
use meshaccel_node::bpf::{self, Loaded};
use meshaccel_node::cri::Cri;
use meshaccel_node::files;
use serde_json::Value;
use slog::{error, info, warn, Logger};

use crate::binaries;
use crate::config::Config;
use crate::plugin_logs;
use crate::preflight;
use crate::smc_follow;
use crate::status::{Repair, Status};
use crate::watch::{self, Wake, Watcher};

/// Left in the state dir by `uninstall`, holding the UID of the pod it ran in: that pod's
/// daemon must not put back what was just removed (it idles until the DaemonSet is
/// deleted), while a later DaemonSet's pod installs again.
const UNINSTALLED_MARKER: &str = "installer-uninstalled";

struct Installer {
    cfg: Config,
    entry: Value,
    plugin: Vec<u8>,
    status: Arc<Status>,
    log: Logger,
    installed: bool,
    last_error: Option<String>,
}

/// Node checks and the BPF programs: everything that must hold before touching the chain.
fn prepare(cfg: &Config, log: &Logger) -> Result<()> {
    let cgroup = preflight::cgroup_v2(cfg)?;
    if let Some(at) = preflight::bpffs(cfg)? {
        info!(log, "mounted a bpf filesystem"; "at" => %at.display());
    }
    match bpf::ensure_current(&cfg.pins) {
        Ok(Loaded::Fresh) => info!(log, "loaded and pinned the BPF programs"; "root" => %cfg.pins.root().display()),
        Ok(Loaded::Current) => {}
        Ok(Loaded::Upgraded { pods }) => info!(log, "upgraded the BPF programs in place"; "podLinksMoved" => pods),
        // Adoption attaches the detached pods again once the chain is installed.
        Ok(Loaded::Replaced { pods, layout }) => warn!(log,
            "map layout changed: loaded a new generation of the BPF programs; established connections stay on the previous one until they close, new ones are plain until their pod is adopted again";
            "podsDetached" => pods, "layout" => layout),
        // The running programs keep serving the pods; only the upgrade is missed.
        Err(e) if bpf::is_loaded(&cfg.pins) => {
            error!(log, "cannot upgrade the BPF programs in place; keeping the running ones"; "error" => format!("{e:#}"))
        }
        Err(e) => return Err(e),
    }
    info!(log, "node ready for meshaccel"; "cgroupRoot" => %cgroup.display(), "bpffsRoot" => %cfg.pins.root().display());
    Ok(())
}

impl Installer {
    fn new(cfg: Config, status: Arc<Status>, log: Logger) -> Result<Self> {
        let plugin = fs::read(&cfg.plugin_binary)
            .with_context(|| format!("read the plugin binary {}", cfg.plugin_binary.display()))?;
        Ok(Self { entry: cfg.entry(), cfg, plugin, status, log, installed: false, last_error: None })
    }

    /// Puts back whatever is missing or changed: pins, plugin binaries, the chain entry;
    /// then checks the result the way the runtime will read it.
    fn reconcile(&mut self) -> Result<Chained> {
        if bpf::ensure_loaded(&self.cfg.pins)? {
            self.repaired(Repair::Bpf);
        }
        let written = binaries::install(&self.plugin, &self.cfg.cni_bin_dirs)?;
        for path in &written {
            info!(self.log, "plugin binary written"; "path" => %path.display());
        }
        if !written.is_empty() {
            self.repaired(Repair::Binary);
        }
        let chained = confdir::install(&self.cfg.cni_conf_dir, &self.entry)?;
        match &chained.change {
            Change::None => {}
            Change::Rewrote => info!(self.log, "meshaccel chained"; "conflist" => %chained.path.display()),
            Change::Converted { from } => info!(self.log, "converted to a conflist and chained meshaccel";
                "from" => %from.display(), "conflist" => %chained.path.display()),
        }
        if chained.change != Change::None {
            self.repaired(Repair::Conflist);
        }
        confdir::verify(&self.cfg.cni_conf_dir, &self.entry)?;
        binaries::verify(&self.plugin, &self.cfg.cni_bin_dirs)?;
        if !self.installed {
            self.installed = true;
            self.status.installed();
            info!(self.log, "installed"; "conflist" => %chained.path.display(), "network" => &chained.network);
        }
        Ok(chained)
    }

    /// Counts a repair as soon as it is made (drift can strike again before the pass
    /// ends); writes before the first complete install are the install itself.
    fn repaired(&self, what: Repair) {
        if self.installed {
            self.status.repaired(what);
            warn!(self.log, "repaired drift"; "what" => ?what);
        }
    }

    /// [`Self::reconcile`] with its outcome recorded as readiness. Errors are logged once
    /// per distinct message, not at every retry.
    fn step(&mut self) -> Option<Chained> {
        match self.reconcile() {
            Ok(chained) => {
                if self.last_error.take().is_some() {
                    info!(self.log, "chain correct again");
                }
                self.status.set_ready(Ok(()));
                Some(chained)
            }
            Err(e) => {
                let msg = format!("{e:#}");
                self.status.reconcile_failed();
                if self.last_error.as_ref() != Some(&msg) {
                    error!(self.log, "cannot install meshaccel; pods start without it until this is fixed"; "error" => &msg);
                    self.last_error = Some(msg.clone());
                }
                self.status.set_ready(Err(msg));
                None
            }
        }
    }

    /// Attaches the pods that were running before the chain included us.
    fn adopt(&self, network: &str) {
        let acfg = AdoptConfig {
            network: network.to_string(),
            ifname: adopt::DEFAULT_IFNAME.into(),
            conf: self.cfg.plugin.clone(),
        };
        let result = Cri::connect(&self.cfg.cri_socket)
            .and_then(|mut cri| adopt::adopt_running_pods(&mut cri, &acfg, &self.log));
        match result {
            Ok(adoptions) => {
                let mut n = 0;
                for a in &adoptions {
                    n += matches!(a.outcome, Outcome::Adopted { .. }) as u64;
                    info!(self.log, "running pod"; "pod" => &a.pod, "sandbox" => &a.sandbox_id, "outcome" => ?a.outcome);
                }
                self.status.adopted(n);
                info!(self.log, "adopted running pods"; "adopted" => n, "sandboxes" => adoptions.len());
            }
            Err(e) => warn!(self.log, "cannot adopt running pods; they are accelerated from their next restart";
                "socket" => %self.cfg.cri_socket.display(), "error" => format!("{e:#}")),
        }
    }

    /// SIGTERM: take the entry out of the chain (and the binary, if configured). The pins
    /// stay, so pods keep their acceleration across an installer restart or upgrade.
    fn cleanup(&self) {
        self.status.set_ready(Err("terminating".into()));
        if self.cfg.cleanup_conflist_on_exit {
            match confdir::uninstall(&self.cfg.cni_conf_dir) {
                Ok(files) => info!(self.log, "removed meshaccel from the chain"; "files" => ?files),
                Err(e) => error!(self.log, "cannot remove meshaccel from the chain"; "error" => %e),
            }
        }
        if self.cfg.cleanup_binary_on_exit {
            match binaries::remove(&self.cfg.cni_bin_dirs) {
                Ok(files) => info!(self.log, "removed the plugin binary"; "files" => ?files),
                Err(e) => error!(self.log, "cannot remove the plugin binary"; "error" => format!("{e:#}")),
            }
        }
    }
}

fn marker(cfg: &Config) -> PathBuf {
    cfg.state_dir().join(UNINSTALLED_MARKER)
}

/// Whether `uninstall` ran in this pod.
fn uninstalled_here(cfg: &Config) -> bool {
    fs::read_to_string(marker(cfg)).is_ok_and(|owner| owner == cfg.pod_uid)
}

/// Waits for the end, installing nothing: `uninstall` ran in this pod.
fn idle(watcher: &mut Watcher, status: &Status, log: &Logger) -> Result<()> {
    status.set_ready(Err("uninstalled by `meshaccel-installer uninstall`; delete the DaemonSet".into()));
    info!(log, "uninstalled in this pod; idle until terminated");
    loop {
        if let Wake::Signal(_) = watcher.wait(std::time::Duration::from_secs(3600))? {
            return Ok(());
        }
    }
}

pub fn run(cfg: Config, log: Logger) -> Result<()> {
    // Before any thread exists, so that every thread inherits the mask and only the
    // signalfd sees SIGTERM.
    watch::block_signals()?;
    let status = Arc::new(Status::new(cfg.pins.clone(), cfg.state_dir(), cfg.ready_file.clone()));
    status.set_ready(Err("starting".into()));
    if let Some(addr) = &cfg.listen {
        crate::http::serve(addr, status.clone(), log.clone())?;
    }
    // Kept to the end: dropping it removes the socket. Without it the plugin's records are
    // still in its log file.
    let _plugin_logs = plugin_logs::start(&cfg.state_dir(), &log)
        .map_err(|e| warn!(log, "cannot forward the plugin's log records"; "error" => format!("{e:#}")))
        .ok();
    let mut dirs = cfg.cni_bin_dirs.clone();
    dirs.push(cfg.cni_conf_dir.clone());
    let mut watcher = Watcher::new(dirs)?;
    if uninstalled_here(&cfg) && !cfg.pod_uid.is_empty() {
        return idle(&mut watcher, &status, &log);
    }
    files::remove_if_exists(&marker(&cfg)).context("remove an earlier DaemonSet's uninstall marker")?;
    prepare(&cfg, &log)?;
    smc_follow::spawn(&cfg, status.clone(), uninstalled_here, &log)?;
    let adopt = cfg.adopt;
    let resync = cfg.resync;
    let mut installer = Installer::new(cfg, status.clone(), log.clone())?;
    let mut adopted = !adopt;
    loop {
        if uninstalled_here(&installer.cfg) {
            return idle(&mut watcher, &status, &log);
        }
        if let Some(chained) = installer.step() {
            if !adopted {
                adopted = true;
                installer.adopt(&chained.network);
            }
        }
        if let Wake::Signal(sig) = watcher.wait(resync)? {
            info!(log, "terminating"; "signal" => %sig);
            installer.cleanup();
            return Ok(());
        }
    }
}

/// One pass of `run` without the watch: for scripts and tests.
pub fn install_once(cfg: Config, log: Logger) -> Result<()> {
    prepare(&cfg, &log)?;
    let status = Arc::new(Status::new(cfg.pins.clone(), cfg.state_dir(), cfg.ready_file.clone()));
    let adopt = cfg.adopt;
    let mut installer = Installer::new(cfg, status, log)?;
    let chained = installer.reconcile()?;
    if adopt {
        installer.adopt(&chained.network);
    }
    installer.status.set_ready(Ok(()));
    Ok(())
}

/// The node-level SMC UEIDs meshaccel added (and only those). The per-pod SMC records
/// stay: a pod's DEL restores its netns from them, and this container does not see the
/// pods' netns.
fn remove_smc_ueids(cfg: &Config, log: &Logger) -> Result<()> {
    let state = cfg.state_dir();
    if !meshaccel_smc::ueid::any_recorded(&state) {
        return Ok(());
    }
    let done = meshaccel_smc::ueid::uninstall(&state).context("remove the SMC UEIDs meshaccel added")?;
    info!(log, "removed the SMC UEIDs meshaccel added"; "removed" => ?done.removed_ueids, "kept" => ?done.kept_ueids,
        "podRecordsKept" => done.pod_records_kept);
    Ok(())
}

/// Removes everything: the chain entry, the plugin binaries, the pins (which detaches
/// every pod), the attachment records and the SMC UEIDs meshaccel added. A daemon running in the same pod stops
/// reconciling first, so it does not put anything back.
pub fn uninstall(cfg: Config, log: Logger) -> Result<()> {
    let state = cfg.state_dir();
    fs::create_dir_all(&state).with_context(|| format!("create {}", state.display()))?;
    fs::write(marker(&cfg), &cfg.pod_uid).context("write the uninstall marker")?;
    let conf = confdir::uninstall(&cfg.cni_conf_dir)?;
    info!(log, "removed meshaccel from the chain"; "files" => ?conf);
    let bins = binaries::remove(&cfg.cni_bin_dirs)?;
    info!(log, "removed the plugin binary"; "files" => ?bins);
    let pods = bpf::list_pods(&cfg.pins).unwrap_or_default().len();
    bpf::unload_all(&cfg.pins).context("remove the pins")?;
    info!(log, "removed the BPF programs, maps and pod links"; "podLinks" => pods, "root" => %cfg.pins.root().display());
    let store = meshaccel_node::sockmap::records(&state);
    let records = store.list().context("list attachment records")?;
    for (id, _) in &records {
        store.remove(id).with_context(|| format!("remove the record of {id}"))?;
    }
    info!(log, "removed attachment records"; "records" => records.len());
    remove_smc_ueids(&cfg, &log)?;
    meshaccel_smc::gate::forget(&state)?;
    // Kept even outside a pod: a daemon running there sees it at its next wake-up and stays
    // idle instead of putting everything back; a new `run` without a pod UID clears it.
    Ok(())
}
