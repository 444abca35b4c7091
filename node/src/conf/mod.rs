//! The plugin's conf entry (the meshaccel object of the chained conflist) parsed once into
//! typed, validated settings, and the per-pod switches (annotations) over them.
//!
//! The plugin parses it at every CNI call; the installer parses the entry it is about to
//! write with the same code, so a conf the plugin would refuse never reaches a node.
pub mod smc;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::pins::{Pins, DEFAULT_ROOT};
use crate::rules::SockmapConf;
pub use smc::SmcConf;

/// Makes the runtime pass pod annotations in `runtimeConfig`.
pub const ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";
pub const ANNOTATION_SOCKMAP: &str = "meshaccel.io/sockmap";
pub const ANNOTATION_SMC: &str = "meshaccel.io/smc";

pub const DEFAULT_STATE_DIR: &str = "/run/meshaccel";
pub const DEFAULT_LOG_FILE: &str = "/var/log/meshaccel/meshaccel.log";

/// Bad input, by the CNI error code it gets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfError {
    /// The network conf or runtimeConfig (CNI code 7).
    #[error("{0}")]
    Network(String),
    /// The environment: `CNI_ARGS`, container id, ifname (CNI code 4).
    #[error("{0}")]
    Env(String),
}

/// What to do when acceleration cannot be set up for a pod.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Log why and pass prevResult through: the pod runs on plain TCP.
    #[default]
    Open,
    /// Fail the CNI call, so the pod does not start unaccelerated.
    Closed,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogConf {
    /// Empty string: stderr only.
    #[serde(default = "default_log_file")]
    pub file: String,
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConf {
    fn default() -> Self {
        Self { file: default_log_file(), level: default_log_level() }
    }
}

fn default_log_file() -> String {
    DEFAULT_LOG_FILE.into()
}
fn default_log_level() -> String {
    "info".into()
}

/// meshaccel's own keys of the plugin's conf entry. Unknown top-level keys are left to
/// other consumers; unknown keys inside our objects are typos and rejected.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PluginConf {
    #[serde(default)]
    pub sockmap: SockmapConf,
    #[serde(default = "default_root")]
    pub bpffs_root: PathBuf,
    /// Where kubelet's cgroup hierarchy (`kubepods…`) starts; default: auto-detected
    /// cgroup v2 mount (`/sys/fs/cgroup/unified` on hybrid hosts, else `/sys/fs/cgroup`).
    #[serde(default)]
    pub cgroup_root: Option<PathBuf>,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub log: LogConf,
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// SMC-R for the network's pods (see docs/smc.md).
    #[serde(default)]
    pub smc: SmcConf,
}

fn default_root() -> PathBuf {
    DEFAULT_ROOT.into()
}
fn default_state_dir() -> PathBuf {
    DEFAULT_STATE_DIR.into()
}

impl PluginConf {
    /// Parses and validates the entry's keys (`type`, `name`, … included: they are ignored).
    pub fn from_entry(entry: &Map<String, Value>) -> Result<Self, ConfError> {
        let net = ConfError::Network;
        // serde_path_to_error names the key (`sockmap.enable`), not only the unknown field.
        let parsed: PluginConf = serde_path_to_error::deserialize(Value::Object(entry.clone()))
            .map_err(|e| net(format!("meshaccel conf: {}: {}", e.path(), e.inner())))?;
        check_abs("bpffsRoot", &parsed.bpffs_root)?;
        check_abs("stateDir", &parsed.state_dir)?;
        if let Some(root) = &parsed.cgroup_root {
            check_abs("cgroupRoot", root)?;
        }
        if !parsed.log.file.is_empty() {
            check_abs("log.file", Path::new(&parsed.log.file))?;
        }
        parsed.smc.validate().map_err(|e| net(format!("smc: {e}")))?;
        parsed.sockmap.pod_config().map_err(net)?;
        crate::logging::parse_level(&parsed.log.level).ok_or_else(|| {
            net(format!("log.level {:?} is not one of critical, error, warning, info, debug, trace", parsed.log.level))
        })?;
        Ok(parsed)
    }

    pub fn pins(&self) -> Pins {
        Pins::new(&self.bpffs_root)
    }
}

/// Absolute and free of `..`, so a conf cannot point the plugin outside where it says.
fn check_abs(what: &str, p: &Path) -> Result<(), ConfError> {
    let ok = p.is_absolute() && p.components().all(|c| !matches!(c, Component::ParentDir));
    if ok {
        Ok(())
    } else {
        Err(ConfError::Network(format!("{what} {} must be an absolute path without '..'", p.display())))
    }
}

/// The Kubernetes identity of the pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodIdentity {
    pub uid: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl PodIdentity {
    /// Parses `CNI_ARGS` (`K=V;K=V`) in any order. Keys we do not use are ignored whatever
    /// `IgnoreUnknown` says: they cannot change what we do.
    pub fn from_cni_args(args: Option<&str>) -> Result<Self, ConfError> {
        let mut id = PodIdentity::default();
        for pair in args.unwrap_or("").split(';').filter(|p| !p.is_empty()) {
            let (k, v) =
                pair.split_once('=').ok_or_else(|| ConfError::Env(format!("CNI_ARGS: {pair:?} is not KEY=VALUE")))?;
            let slot = match k {
                "K8S_POD_UID" => &mut id.uid,
                "K8S_POD_NAMESPACE" => &mut id.namespace,
                "K8S_POD_NAME" => &mut id.name,
                _ => continue,
            };
            *slot = Some(v.to_string());
        }
        if let Some(uid) = &id.uid {
            check_pod_uid(uid)?;
        }
        Ok(id)
    }

    /// `namespace/name`, `?` for what is unknown.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.namespace.as_deref().unwrap_or("?"), self.name.as_deref().unwrap_or("?"))
    }
}

/// Pod UIDs become cgroup path components: only UUID characters are accepted.
pub fn check_pod_uid(uid: &str) -> Result<(), ConfError> {
    let ok = !uid.is_empty() && uid.len() <= 64 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ConfError::Env(format!("K8S_POD_UID {uid:?} is not a UUID")))
    }
}

/// Per-pod switches: the network's defaults overridden by the pod's annotations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodSettings {
    pub sockmap: bool,
    /// `None`: the network's `smc` settings decide.
    pub smc: Option<bool>,
}

impl PodSettings {
    pub fn resolve(conf: &PluginConf, annotations: &BTreeMap<String, String>) -> Result<Self, ConfError> {
        Ok(Self {
            sockmap: bool_annotation(annotations, ANNOTATION_SOCKMAP)?.unwrap_or(conf.sockmap.enabled),
            smc: bool_annotation(annotations, ANNOTATION_SMC)?,
        })
    }
}

fn bool_annotation(ann: &BTreeMap<String, String>, key: &str) -> Result<Option<bool>, ConfError> {
    match ann.get(key).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(ConfError::Network(format!("annotation {key}={other:?}: expected \"true\" or \"false\""))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(v: Value) -> Map<String, Value> {
        let mut base = json!({"type": "meshaccel"});
        base.as_object_mut().unwrap().extend(v.as_object().unwrap().clone());
        base.as_object().unwrap().clone()
    }

    #[test]
    fn defaults_are_production_paths() {
        let c = PluginConf::from_entry(&entry(json!({}))).unwrap();
        assert!(c.sockmap.enabled);
        assert_eq!(c.bpffs_root, Path::new(DEFAULT_ROOT));
        assert_eq!(c.state_dir, Path::new(DEFAULT_STATE_DIR));
        assert_eq!(c.failure_policy, FailurePolicy::Open);
        assert_eq!(c.cgroup_root, None);
    }

    #[test]
    fn rejects_relative_or_escaping_paths_and_typos() {
        for bad in [
            json!({"bpffsRoot": "relative"}),
            json!({"stateDir": "/run/../etc"}),
            json!({"sockmap": {"enable": true}}),
            json!({"failurePolicy": "sometimes"}),
            json!({"log": {"level": "loud"}}),
        ] {
            let e = PluginConf::from_entry(&entry(bad.clone())).unwrap_err();
            assert!(matches!(e, ConfError::Network(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn smc_probe_conf_is_validated() {
        let ok = PluginConf::from_entry(&entry(json!({
            "smc": {"probe": {"peers": ["10.0.0.2:7471", "[fd00::2]:7471"], "timeoutMs": 1500}}
        })))
        .unwrap();
        assert_eq!(ok.smc.probe.peers.len(), 2);
        assert_eq!(PluginConf::from_entry(&entry(json!({}))).unwrap().smc.probe.timeout_ms, 2000);
        for bad in [
            json!({"smc": {"probe": {"peers": ["10.0.0.2"]}}}),
            json!({"smc": {"probe": {"peers": "10.0.0.2:7471"}}}),
            json!({"smc": {"probe": {"timeoutMs": 5}}}),
            json!({"smc": {"probe": {"trust": "yes"}}}),
            json!({"smc": {"probe": {"trust": true, "peers": ["10.0.0.2:7471"]}}}),
            json!({"smc": {"probe": {"timeout": 100}}}),
            json!({"smc": {"reachabilityTtl": 0}}),
            json!({"smc": {"enabeld": true}}),
        ] {
            let e = PluginConf::from_entry(&entry(bad.clone())).unwrap_err();
            assert!(matches!(e, ConfError::Network(_)), "{bad}: {e}");
            assert!(e.to_string().contains("smc"), "{bad}: the error names the key: {e}");
        }
    }

    #[test]
    fn typo_errors_name_the_key_path() {
        let e = PluginConf::from_entry(&entry(json!({"sockmap": {"enable": true}}))).unwrap_err();
        assert!(e.to_string().contains("sockmap"), "{e}");
    }

    #[test]
    fn cni_args_in_any_order_and_hostile_uids() {
        let a = PodIdentity::from_cni_args(Some(
            "K8S_POD_UID=0a1b2c3d-0000-4000-8000-00000000beef;IgnoreUnknown=1;K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns",
        ))
        .unwrap();
        assert_eq!(a.uid.as_deref(), Some("0a1b2c3d-0000-4000-8000-00000000beef"));
        assert_eq!(a.name.as_deref(), Some("p"));
        assert_eq!(a.namespace.as_deref(), Some("ns"));
        for bad in ["K8S_POD_UID=../../x", "K8S_POD_UID=a/b", "K8S_POD_UID=", "garbage"] {
            assert!(matches!(PodIdentity::from_cni_args(Some(bad)), Err(ConfError::Env(_))), "{bad}");
        }
    }

    #[test]
    fn annotations_override_network_default() {
        let conf = PluginConf::from_entry(&entry(json!({"sockmap": {"enabled": true}}))).unwrap();
        let ann = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let s = PodSettings::resolve(&conf, &ann(&[(ANNOTATION_SOCKMAP, "false"), (ANNOTATION_SMC, "true")])).unwrap();
        assert!(!s.sockmap);
        assert_eq!(s.smc, Some(true));
        assert!(PodSettings::resolve(&conf, &BTreeMap::new()).unwrap().sockmap);
        let bad = PodSettings::resolve(&conf, &ann(&[(ANNOTATION_SOCKMAP, "yes")]));
        assert!(matches!(bad, Err(ConfError::Network(_))));
    }
}
