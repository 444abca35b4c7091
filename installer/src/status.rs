//! What the daemon reports: readiness (HTTP `/readyz` and an optional file) and the
//! Prometheus metrics, rendered at scrape time.
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use meshaccel_common::Counter;
use meshaccel_node::bpf;
use meshaccel_node::pins::Pins;

/// What a reconcile had to put back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repair {
    Conflist,
    Binary,
    Bpf,
}

impl Repair {
    const ALL: [Repair; 3] = [Repair::Conflist, Repair::Binary, Repair::Bpf];

    fn label(self) -> &'static str {
        match self {
            Repair::Conflist => "conflist",
            Repair::Binary => "binary",
            Repair::Bpf => "bpf",
        }
    }
}

pub struct Status {
    pins: Pins,
    /// The plugin's state dir (the SMC gate).
    state_dir: PathBuf,
    ready_file: Option<PathBuf>,
    /// `Err(reason)` while the chain is not correct.
    ready: Mutex<Result<(), String>>,
    installs: AtomicU64,
    repairs: [AtomicU64; 3],
    reconcile_errors: AtomicU64,
    adopted: AtomicU64,
    /// SMC reachability re-checks by the daemon: [verified, failed].
    smc_rechecks: [AtomicU64; 2],
}

impl Status {
    pub fn new(pins: Pins, state_dir: PathBuf, ready_file: Option<PathBuf>) -> Self {
        Self {
            pins,
            state_dir,
            ready_file,
            ready: Mutex::new(Err("starting".into())),
            installs: AtomicU64::new(0),
            repairs: Default::default(),
            reconcile_errors: AtomicU64::new(0),
            adopted: AtomicU64::new(0),
            smc_rechecks: Default::default(),
        }
    }

    /// Records readiness; the ready file follows it.
    pub fn set_ready(&self, ready: Result<(), String>) {
        if let Some(f) = &self.ready_file {
            let _ = match &ready {
                Ok(()) => fs::write(f, b"ready\n"),
                Err(_) => meshaccel_node::files::remove_if_exists(f).map(|_| ()),
            };
        }
        *self.ready.lock().unwrap_or_else(|p| p.into_inner()) = ready;
    }

    pub fn ready(&self) -> Result<(), String> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn installed(&self) {
        self.installs.fetch_add(1, Ordering::Relaxed);
    }

    pub fn repaired(&self, what: Repair) {
        self.repairs[what as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn reconcile_failed(&self) {
        self.reconcile_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn adopted(&self, n: u64) {
        self.adopted.fetch_add(n, Ordering::Relaxed);
    }

    pub fn smc_rechecked(&self, verified: bool) {
        self.smc_rechecks[!verified as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metric(
            "meshaccel_installer_ready",
            "gauge",
            "1 while meshaccel is chained last in the primary CNI configuration.",
            &[("", self.ready().is_ok() as u64)],
        );
        metric(
            "meshaccel_installer_installs_total",
            "counter",
            "Completed installs (chain, plugin binary, BPF programs).",
            &[("", get(&self.installs))],
        );
        let repairs: Vec<(String, u64)> = Repair::ALL
            .iter()
            .map(|r| (format!("{{what=\"{}\"}}", r.label()), get(&self.repairs[*r as usize])))
            .collect();
        let repairs: Vec<(&str, u64)> = repairs.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            "meshaccel_installer_repairs_total",
            "counter",
            "Drift put back after the install, by what had drifted.",
            &repairs,
        );
        metric(
            "meshaccel_installer_reconcile_errors_total",
            "counter",
            "Reconciles that failed (see the logs).",
            &[("", get(&self.reconcile_errors))],
        );
        metric(
            "meshaccel_installer_adopted_pods_total",
            "counter",
            "Running pods attached at start-up.",
            &[("", get(&self.adopted))],
        );
        metric(
            "meshaccel_smc_reachability_rechecks_total",
            "counter",
            "RDMA reachability re-checks the daemon ran for running SMC pods, by verdict.",
            &[
                ("{verdict=\"verified\"}", get(&self.smc_rechecks[0])),
                ("{verdict=\"failed\"}", get(&self.smc_rechecks[1])),
            ],
        );
        metric(
            "meshaccel_smc_suspended",
            "gauge",
            "1 while the node's SMC gate is suspended: new sockets of SMC pods are plain TCP (RDMA path not verified).",
            &[("", meshaccel_smc::gate::is_suspended(&self.state_dir) as u64)],
        );
        if let Ok(pods) = bpf::list_pods(&self.pins) {
            metric(
                "meshaccel_accelerated_pods",
                "gauge",
                "Pod attachments with a pinned sock_ops link.",
                &[("", pods.len() as u64)],
            );
        }
        if let Ok(counters) = bpf::read_counters(&self.pins) {
            for (c, v) in counters {
                let (name, help) = datapath_metric(c);
                metric(&format!("meshaccel_sockmap_{name}_total"), "counter", help, &[("", v)]);
            }
        }
        out
    }
}

/// Each datapath counter's metric name (between `meshaccel_sockmap_` and `_total`; a unit
/// comes last, as Prometheus names it) and help. `meshaccel stats` names them too, its
/// own way (`Counter::name`).
fn datapath_metric(c: Counter) -> (&'static str, &'static str) {
    match c {
        Counter::SocketsInserted => ("sockets_inserted", "Sockets put in the sockhash at establishment."),
        Counter::InsertFailures => ("insert_failures", "Sockhash inserts the kernel refused (key taken, map full)."),
        Counter::MsgRedirected => ("msgs_redirected", "Messages delivered straight into the peer socket."),
        Counter::RedirectMisses => {
            ("redirect_misses", "Connections left on plain TCP: peer not an accelerated socket of this node.")
        }
        Counter::BytesRedirected => ("redirected_bytes", "Bytes delivered straight into the peer socket."),
        Counter::MsgPassed => ("msgs_passed", "Messages sent on plain TCP by connections decided plain."),
        Counter::Ambiguous => ("ambiguous", "Pairings refused (Fast Open data, key taken): left on plain TCP."),
        Counter::Backpressure => ("backpressure_fallbacks", "Connections moved to plain TCP: the reader fell behind."),
        Counter::Filtered => ("filtered", "Connections the pod's filter rules kept on plain TCP."),
        Counter::Streaming => ("streaming_fallbacks", "Connection ends moved to plain TCP: they stream small writes."),
        Counter::LeftSockmap => {
            ("left_sockmap", "Streaming ends that left the sockmap (nothing redirected into them).")
        }
        Counter::Blocking => ("blocking_plain", "Connection ends kept on plain TCP: they use blocking sockets."),
    }
}
