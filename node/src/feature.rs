//! An acceleration feature (sockmap, SMC) as the CNI verbs see it — set up and record,
//! tear down, verify, collect — and the [`Driver`] that applies the network's failure
//! policy to all of them the same way. A new feature is one more [`Feature`]; the policy
//! is written once, here, and tested without root against fake features.
use std::collections::HashSet;
use std::path::Path;

use slog::{error, info, warn, Logger};

use crate::conf::{ConfError, FailurePolicy, PluginConf, PodIdentity, PodSettings};
use crate::pins::AttachmentId;

/// CNI error codes: the spec's (0–99) that meshaccel returns, and its own (100+).
pub mod codes {
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const NOT_AVAILABLE: u32 = 50;
    /// Acceleration could not be set up and `failurePolicy` is `closed`.
    pub const SETUP_FAILED: u32 = 100;
    /// DEL or GC could not remove what ADD created.
    pub const TEARDOWN_FAILED: u32 = 101;
    /// CHECK found the attachment different from what ADD set up.
    pub const CHECK_FAILED: u32 = 102;
}

/// A CNI error: its code, the short `msg` (for codes 100+) and the details.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl Failure {
    fn new(code: u32, msg: impl Into<String>, err: &anyhow::Error) -> Self {
        Self { code, msg: msg.into(), details: format!("{err:#}") }
    }
}

impl From<ConfError> for Failure {
    fn from(e: ConfError) -> Self {
        let code = match e {
            ConfError::Network(_) => codes::INVALID_NETWORK_CONFIG,
            ConfError::Env(_) => codes::INVALID_ENV,
        };
        Self { code, msg: String::new(), details: e.to_string() }
    }
}

/// One pod attachment as ADD, CHECK (and the installer's adoption) see it.
pub struct Pod<'a> {
    pub conf: &'a PluginConf,
    /// The network's name (the conflist's `name`): GC only collects its own.
    pub network: &'a str,
    pub attachment: &'a AttachmentId,
    pub container_id: &'a str,
    pub ifname: &'a str,
    /// `None` when there is none to enter (adoption, containerd's second DEL).
    pub netns: Option<&'a Path>,
    pub identity: &'a PodIdentity,
    pub settings: PodSettings,
}

/// Why a feature was not set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Bad input (unknown device, sysctl or interface, missing netns): a CNI error whatever
    /// the failure policy.
    #[error(transparent)]
    Refused(ConfError),
    /// The node cannot do it (no kernel support, no cgroup, unverified path, …): the
    /// failure policy decides.
    #[error(transparent)]
    Unavailable(anyhow::Error),
}

impl From<anyhow::Error> for SetupError {
    fn from(e: anyhow::Error) -> Self {
        Self::Unavailable(e)
    }
}

pub trait Feature {
    /// For logs and errors.
    fn name(&self) -> &'static str;
    /// Whether this pod gets the feature (the network's settings and the pod's annotations).
    fn wanted(&self, pod: &Pod) -> bool;
    /// Sets the feature up and records it. On error nothing of it is left.
    fn set_up(&self, pod: &Pod, log: &Logger) -> Result<(), SetupError>;
    /// Undoes what the record says and removes the record. Idempotent; needs neither netns
    /// nor prevResult. Returns whether there was anything.
    fn tear_down(&self, conf: &PluginConf, id: &AttachmentId) -> anyhow::Result<bool>;
    /// Whether ADD recorded setting the feature up for `id`.
    fn recorded(&self, conf: &PluginConf, id: &AttachmentId) -> anyhow::Result<bool>;
    /// CHECK of a recorded attachment: the live state is what ADD recorded and the conf asks.
    fn verify(&self, pod: &Pod) -> anyhow::Result<()>;
    /// CHECK of a pod that should have the feature: `verify` if ADD recorded it, else
    /// Ok(false). A feature whose `verify` reads the record overrides this to read it once.
    fn verify_recorded(&self, pod: &Pod) -> anyhow::Result<bool> {
        if !self.recorded(pod.conf, pod.attachment)? {
            return Ok(false);
        }
        self.verify(pod)?;
        Ok(true)
    }
    /// CHECK of a pod that must not have the feature: nothing of it is live.
    fn verify_absent(&self, _pod: &Pod) -> anyhow::Result<()> {
        Ok(())
    }
    /// The attachments of `network` it has records of (GC).
    fn attachments(&self, conf: &PluginConf, network: &str) -> anyhow::Result<Vec<AttachmentId>>;
    /// STATUS: whether ADD could set it up on this node.
    fn ready(&self, _conf: &PluginConf) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Runs the CNI verbs over features in order (teardown in reverse).
pub struct Driver<'a> {
    features: &'a [&'a dyn Feature],
}

impl<'a> Driver<'a> {
    pub fn new(features: &'a [&'a dyn Feature]) -> Self {
        Self { features }
    }

    /// ADD. A feature that cannot be set up is skipped under `failurePolicy: open` (the pod
    /// keeps plain TCP for it); otherwise, and for bad input, the features already set up
    /// are torn down again and the call fails. Returns the names of the features set up.
    pub fn add(&self, pod: &Pod, log: &Logger) -> Result<Vec<&'static str>, Failure> {
        let mut done: Vec<&dyn Feature> = Vec::new();
        for &f in self.features.iter().filter(|f| f.wanted(pod)) {
            let failure = match f.set_up(pod, log) {
                Ok(()) => {
                    done.push(f);
                    continue;
                }
                Err(SetupError::Refused(e)) => Failure::from(e),
                Err(SetupError::Unavailable(e)) if pod.conf.failure_policy == FailurePolicy::Open => {
                    warn!(log, "{} not set up: cannot accelerate this pod with it, it keeps plain TCP", f.name(); "error" => format!("{e:#}"));
                    continue;
                }
                Err(SetupError::Unavailable(e)) => {
                    error!(log, "{} not set up: cannot accelerate this pod (failurePolicy closed)", f.name(); "error" => format!("{e:#}"));
                    Failure::new(codes::SETUP_FAILED, format!("meshaccel: {} setup failed", f.name()), &e)
                }
            };
            for d in done.iter().rev() {
                if let Err(e) = d.tear_down(pod.conf, pod.attachment) {
                    warn!(log, "rollback incomplete"; "feature" => d.name(), "error" => format!("{e:#}"));
                }
            }
            return Err(failure);
        }
        Ok(done.iter().map(|f| f.name()).collect())
    }

    /// DEL: every feature torn down, whatever the pod's settings now say. Returns, per
    /// feature, whether it had anything.
    pub fn del(&self, conf: &PluginConf, id: &AttachmentId) -> Result<Vec<(&'static str, bool)>, Failure> {
        self.features
            .iter()
            .rev()
            .map(|f| match f.tear_down(conf, id) {
                Ok(had) => Ok((f.name(), had)),
                Err(e) => {
                    Err(Failure::new(codes::TEARDOWN_FAILED, format!("meshaccel: {} teardown failed", f.name()), &e))
                }
            })
            .collect()
    }

    /// CHECK: each feature is set up exactly when the pod should have it (or ADD fell back
    /// under `failurePolicy: open`), and what is set up is still right.
    pub fn check(&self, pod: &Pod, log: &Logger) -> Result<(), Failure> {
        self.features.iter().try_for_each(|f| self.check_one(*f, pod, log)).map_err(|e| {
            warn!(log, "check failed"; "error" => format!("{e:#}"));
            Failure::new(codes::CHECK_FAILED, "meshaccel: check failed", &e)
        })
    }

    fn check_one(&self, f: &dyn Feature, pod: &Pod, log: &Logger) -> anyhow::Result<()> {
        let name = f.name();
        if !f.wanted(pod) {
            anyhow::ensure!(!f.recorded(pod.conf, pod.attachment)?, "{name} is off for this pod but ADD set it up");
            return f.verify_absent(pod);
        }
        if f.verify_recorded(pod)? {
            return Ok(());
        }
        anyhow::ensure!(
            pod.conf.failure_policy == FailurePolicy::Open,
            "{name} should be on for this pod but it has no attachment (ADD did not set it up)"
        );
        info!(log, "{name} not set up for this pod (ADD fell back to plain TCP)");
        Ok(())
    }

    /// GC: this network's attachments that are not `valid`. The spec asks GC to carry on
    /// past one that cannot be removed; the next GC retries it.
    pub fn gc(
        &self,
        conf: &PluginConf,
        network: &str,
        valid: &HashSet<AttachmentId>,
        log: &Logger,
    ) -> Result<(), Failure> {
        for f in self.features.iter().rev() {
            let ids = f
                .attachments(conf, network)
                .map_err(|e| Failure::new(codes::IO_FAILURE, "", &e.context(format!("list {} records", f.name()))))?;
            for id in ids.into_iter().filter(|id| !valid.contains(id)) {
                match f.tear_down(conf, &id) {
                    Ok(_) => info!(log, "collected stale attachment"; "feature" => f.name(), "attachment" => %id),
                    Err(e) => warn!(log, "cannot collect attachment"; "feature" => f.name(), "attachment" => %id,
                        "error" => format!("{e:#}")),
                }
            }
        }
        Ok(())
    }

    /// STATUS: the network is available when every feature could be set up, or when ADD
    /// would pass the pod through (`failurePolicy: open`).
    pub fn status(&self, conf: &PluginConf, log: &Logger) -> Result<(), Failure> {
        for f in self.features {
            match f.ready(conf) {
                Ok(()) => {}
                Err(e) if conf.failure_policy == FailurePolicy::Open => {
                    warn!(log, "{} cannot be set up; pods will run on plain TCP", f.name(); "error" => format!("{e:#}"));
                }
                Err(e) => {
                    return Err(Failure::new(
                        codes::NOT_AVAILABLE,
                        "",
                        &e.context(format!("meshaccel: {} not available", f.name())),
                    ))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// A feature that does what it is told and logs what the driver asked of it.
    struct Fake {
        name: &'static str,
        setup: fn() -> Result<(), SetupError>,
        recorded: bool,
        journal: RefCell<Vec<String>>,
    }

    impl Fake {
        fn new(name: &'static str, setup: fn() -> Result<(), SetupError>) -> Self {
            Self { name, setup, recorded: false, journal: RefCell::default() }
        }
        fn journal(&self) -> Vec<String> {
            self.journal.borrow().clone()
        }
    }

    impl Feature for Fake {
        fn name(&self) -> &'static str {
            self.name
        }
        fn wanted(&self, pod: &Pod) -> bool {
            pod.settings.sockmap
        }
        fn set_up(&self, _: &Pod, _: &Logger) -> Result<(), SetupError> {
            self.journal.borrow_mut().push("set_up".into());
            (self.setup)()
        }
        fn tear_down(&self, _: &PluginConf, id: &AttachmentId) -> anyhow::Result<bool> {
            self.journal.borrow_mut().push(format!("tear_down {id}"));
            Ok(self.recorded)
        }
        fn recorded(&self, _: &PluginConf, _: &AttachmentId) -> anyhow::Result<bool> {
            self.journal.borrow_mut().push("recorded".into());
            Ok(self.recorded)
        }
        fn verify(&self, _: &Pod) -> anyhow::Result<()> {
            self.journal.borrow_mut().push("verify".into());
            Ok(())
        }
        fn attachments(&self, _: &PluginConf, _: &str) -> anyhow::Result<Vec<AttachmentId>> {
            Ok(vec![AttachmentId::new("kept", "eth0")?, AttachmentId::new("gone", "eth0")?])
        }
    }

    fn ok() -> Result<(), SetupError> {
        Ok(())
    }
    fn unavailable() -> Result<(), SetupError> {
        Err(SetupError::Unavailable(anyhow::anyhow!("no kernel support")))
    }
    fn refused() -> Result<(), SetupError> {
        Err(SetupError::Refused(ConfError::Network("no such device".into())))
    }

    fn conf(policy: FailurePolicy) -> PluginConf {
        let mut c = PluginConf::from_entry(&serde_json::Map::new()).unwrap();
        c.failure_policy = policy;
        c
    }

    fn with_pod<T>(conf: &PluginConf, wanted: bool, f: impl FnOnce(&Pod) -> T) -> T {
        let id = AttachmentId::new("cid", "eth0").unwrap();
        let identity = PodIdentity::default();
        let pod = Pod {
            conf,
            network: "net",
            attachment: &id,
            container_id: "cid",
            ifname: "eth0",
            netns: None,
            identity: &identity,
            settings: PodSettings { sockmap: wanted, smc: None },
        };
        f(&pod)
    }

    fn log() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    #[test]
    fn open_policy_skips_a_feature_the_node_cannot_do_and_keeps_the_others() {
        let (a, b, c) = (Fake::new("a", ok), Fake::new("b", unavailable), Fake::new("c", ok));
        let conf = conf(FailurePolicy::Open);
        let on = with_pod(&conf, true, |pod| Driver::new(&[&a, &b, &c]).add(pod, &log())).unwrap();
        assert_eq!(on, vec!["a", "c"]);
        assert_eq!(a.journal(), vec!["set_up"], "nothing torn down");
    }

    #[test]
    fn closed_policy_fails_and_undoes_what_was_set_up_in_reverse() {
        let (a, b, c) = (Fake::new("a", ok), Fake::new("b", unavailable), Fake::new("c", ok));
        let conf = conf(FailurePolicy::Closed);
        let e = with_pod(&conf, true, |pod| Driver::new(&[&a, &b, &c]).add(pod, &log())).unwrap_err();
        assert_eq!(e.code, codes::SETUP_FAILED);
        assert!(e.msg.contains('b') && e.details.contains("no kernel support"), "{e:?}");
        assert_eq!(a.journal(), vec!["set_up", "tear_down cid_eth0"]);
        assert!(c.journal().is_empty(), "the features after the failed one are not tried");
    }

    #[test]
    fn bad_input_is_an_error_whatever_the_policy() {
        for policy in [FailurePolicy::Open, FailurePolicy::Closed] {
            let (a, b) = (Fake::new("a", ok), Fake::new("b", refused));
            let conf = conf(policy);
            let e = with_pod(&conf, true, |pod| Driver::new(&[&a, &b]).add(pod, &log())).unwrap_err();
            assert_eq!(e.code, codes::INVALID_NETWORK_CONFIG, "{policy:?}");
            assert_eq!(a.journal(), vec!["set_up", "tear_down cid_eth0"], "{policy:?}");
        }
    }

    #[test]
    fn unwanted_features_are_not_set_up_and_del_tears_down_all_in_reverse() {
        let a = Fake::new("a", ok);
        let b = Fake { recorded: true, ..Fake::new("b", ok) };
        let conf = conf(FailurePolicy::Closed);
        let on = with_pod(&conf, false, |pod| Driver::new(&[&a, &b]).add(pod, &log())).unwrap();
        assert!(on.is_empty() && a.journal().is_empty());
        let id = AttachmentId::new("cid", "eth0").unwrap();
        assert_eq!(Driver::new(&[&a, &b]).del(&conf, &id).unwrap(), vec![("b", true), ("a", false)]);
    }

    #[test]
    fn check_compares_what_is_recorded_with_what_the_pod_should_have() {
        let missing = Fake::new("missing", ok);
        let present = Fake { recorded: true, ..Fake::new("present", ok) };
        let open = conf(FailurePolicy::Open);
        let closed = conf(FailurePolicy::Closed);
        // Wanted and recorded: verified, the record read once.
        with_pod(&closed, true, |pod| Driver::new(&[&present]).check(pod, &log())).unwrap();
        assert_eq!(present.journal(), vec!["recorded", "verify"]);
        // Wanted, not recorded: fine only where ADD may have fallen back.
        with_pod(&open, true, |pod| Driver::new(&[&missing]).check(pod, &log())).unwrap();
        let e = with_pod(&closed, true, |pod| Driver::new(&[&missing]).check(pod, &log())).unwrap_err();
        assert_eq!(e.code, codes::CHECK_FAILED);
        // Not wanted but recorded: wrong under any policy.
        let e = with_pod(&open, false, |pod| Driver::new(&[&present]).check(pod, &log())).unwrap_err();
        assert!(e.details.contains("present is off"), "{e:?}");
    }

    #[test]
    fn gc_collects_only_attachments_the_runtime_no_longer_has() {
        let a = Fake::new("a", ok);
        let valid = HashSet::from([AttachmentId::new("kept", "eth0").unwrap()]);
        Driver::new(&[&a]).gc(&conf(FailurePolicy::Open), "net", &valid, &log()).unwrap();
        assert_eq!(a.journal(), vec!["tear_down gone_eth0"]);
    }
}
