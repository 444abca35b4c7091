//! Network conf + `CNI_ARGS` + pod annotations → one validated [`Invocation`].
//!
//! Everything that comes from outside is checked here, before anything is created, so a
//! bad input can only ever produce an error and no state.
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use meshaccel_installer::pins::{AttachmentId, Pins, DEFAULT_ROOT};
use rscni_plugin::error::Error;
use rscni_plugin::types::{Args, NetConf};
use meshaccel_installer::rules::SockmapConf;
use serde::Deserialize;
use serde_json::Value;

pub const ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";
pub const ANNOTATION_SOCKMAP: &str = "meshaccel.io/sockmap";
pub const ANNOTATION_SMC: &str = "meshaccel.io/smc";

pub const DEFAULT_STATE_DIR: &str = "/run/meshaccel";
pub const DEFAULT_LOG_FILE: &str = "/var/log/meshaccel/meshaccel.log";

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
    pub smc: crate::smc::SmcConf,
}

fn default_root() -> PathBuf {
    DEFAULT_ROOT.into()
}
fn default_state_dir() -> PathBuf {
    DEFAULT_STATE_DIR.into()
}

impl PluginConf {
    pub fn from_netconf(conf: &NetConf) -> Result<Self, Error> {
        let obj = Value::Object(conf.custom.clone().into_iter().collect());
        // serde_path_to_error names the key (`sockmap.enable`), not only the unknown field.
        let parsed: PluginConf = serde_path_to_error::deserialize(obj)
            .map_err(|e| Error::InvalidNetworkConfig(format!("meshaccel conf: {}: {}", e.path(), e.inner())))?;
        check_abs("bpffsRoot", &parsed.bpffs_root)?;
        check_abs("stateDir", &parsed.state_dir)?;
        if let Some(root) = &parsed.cgroup_root {
            check_abs("cgroupRoot", root)?;
        }
        if !parsed.log.file.is_empty() {
            check_abs("log.file", Path::new(&parsed.log.file))?;
        }
        parsed.smc.validate().map_err(|e| Error::InvalidNetworkConfig(format!("smc: {e}")))?;
        parsed.sockmap.pod_config().map_err(Error::InvalidNetworkConfig)?;
        crate::logging::parse_level(&parsed.log.level)
            .ok_or_else(|| Error::InvalidNetworkConfig(format!("log.level {:?} is not one of critical, error, warning, info, debug, trace", parsed.log.level)))?;
        Ok(parsed)
    }

    pub fn pins(&self) -> Pins {
        Pins::new(&self.bpffs_root)
    }
}

/// Absolute and free of `..`, so a conf cannot point the plugin outside where it says.
fn check_abs(what: &str, p: &Path) -> Result<(), Error> {
    let ok = p.is_absolute() && p.components().all(|c| !matches!(c, Component::ParentDir));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidNetworkConfig(format!("{what} {} must be an absolute path without '..'", p.display())))
    }
}

/// The Kubernetes identity of the pod, from `CNI_ARGS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodIdentity {
    pub uid: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl PodIdentity {
    /// Parses `K=V;K=V` in any order. Keys we do not use are ignored whatever
    /// `IgnoreUnknown` says: they cannot change what we do.
    pub fn from_cni_args(args: Option<&str>) -> Result<Self, Error> {
        let mut id = PodIdentity::default();
        for pair in args.unwrap_or("").split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| Error::InvalidEnvValue(format!("CNI_ARGS: {pair:?} is not KEY=VALUE")))?;
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
}

/// Pod UIDs become cgroup path components: only UUID characters are accepted.
fn check_pod_uid(uid: &str) -> Result<(), Error> {
    let ok = !uid.is_empty()
        && uid.len() <= 64
        && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidEnvValue(format!("K8S_POD_UID {uid:?} is not a UUID")))
    }
}

/// Per-pod switches: the network's defaults overridden by the pod's annotations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodSettings {
    pub sockmap: bool,
    /// Read and validated now; acted on by the SMC support.
    pub smc: Option<bool>,
}

impl PodSettings {
    pub fn resolve(conf: &PluginConf, netconf: &NetConf) -> Result<Self, Error> {
        let ann = annotations(netconf)?;
        Ok(Self {
            sockmap: bool_annotation(&ann, ANNOTATION_SOCKMAP)?.unwrap_or(conf.sockmap.enabled),
            smc: bool_annotation(&ann, ANNOTATION_SMC)?,
        })
    }
}

fn annotations(netconf: &NetConf) -> Result<HashMap<String, String>, Error> {
    // containerd sends `null` for a pod without annotations (a nil Go map).
    let rc = netconf.runtime_config.as_ref();
    let Some(v) = rc.and_then(|rc| rc.custom.get(ANNOTATIONS_CAPABILITY)).filter(|v| !v.is_null()) else {
        return Ok(HashMap::new());
    };
    serde_json::from_value(v.clone())
        .map_err(|e| Error::InvalidNetworkConfig(format!("runtimeConfig {ANNOTATIONS_CAPABILITY}: {e}")))
}

fn bool_annotation(ann: &HashMap<String, String>, key: &str) -> Result<Option<bool>, Error> {
    match ann.get(key).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(Error::InvalidNetworkConfig(format!(
            "annotation {key}={other:?}: expected \"true\" or \"false\""
        ))),
    }
}

/// One validated CNI call: everything the commands need, nothing unchecked.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub network: String,
    pub conf: PluginConf,
    pub attachment: AttachmentId,
    pub container_id: String,
    pub ifname: String,
    /// Empty for containerd's second DEL.
    pub netns: Option<PathBuf>,
    pub pod: PodIdentity,
}

impl Invocation {
    /// For ADD, DEL and CHECK: rscni has already validated container id and ifname
    /// against the spec; the attachment id re-checks them as path components.
    pub fn from_args(args: &Args) -> Result<Self, Error> {
        Self::parse(args, true)
    }

    /// For DEL: the pod identity is not needed to undo an attachment, so malformed
    /// `CNI_ARGS` must not make teardown fail (the runtime would retry it for ever).
    pub fn for_teardown(args: &Args) -> Result<Self, Error> {
        Self::parse(args, false)
    }

    fn parse(args: &Args, strict_pod_identity: bool) -> Result<Self, Error> {
        let conf = PluginConf::from_netconf(args.config())?;
        let container_id = args.container_id().map(|c| c.to_string()).unwrap_or_default();
        let ifname = args.ifname().map(|i| i.to_string()).unwrap_or_default();
        let attachment = AttachmentId::new(&container_id, &ifname)
            .map_err(|e| Error::InvalidEnvValue(e.to_string()))?;
        Ok(Self {
            network: args.config().name.clone(),
            conf,
            attachment,
            container_id,
            ifname,
            netns: args.netns().cloned(),
            pod: match PodIdentity::from_cni_args(args.args()) {
                Err(_) if !strict_pod_identity => PodIdentity::default(),
                other => other?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn netconf(extra: Value) -> NetConf {
        let mut base = serde_json::json!({"cniVersion": "1.0.0", "name": "net", "type": "meshaccel"});
        base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn defaults_are_production_paths() {
        let c = PluginConf::from_netconf(&netconf(serde_json::json!({}))).unwrap();
        assert!(c.sockmap.enabled);
        assert_eq!(c.bpffs_root, Path::new(DEFAULT_ROOT));
        assert_eq!(c.state_dir, Path::new(DEFAULT_STATE_DIR));
        assert_eq!(c.failure_policy, FailurePolicy::Open);
        assert_eq!(c.cgroup_root, None);
    }

    #[test]
    fn rejects_relative_or_escaping_paths_and_typos() {
        for bad in [
            serde_json::json!({"bpffsRoot": "relative"}),
            serde_json::json!({"stateDir": "/run/../etc"}),
            serde_json::json!({"sockmap": {"enable": true}}),
            serde_json::json!({"failurePolicy": "sometimes"}),
            serde_json::json!({"log": {"level": "loud"}}),
        ] {
            let e = PluginConf::from_netconf(&netconf(bad.clone())).unwrap_err();
            assert_eq!(u32::from(&e), 7, "{bad}: {e}");
        }
    }

    #[test]
    fn smc_probe_conf_is_validated_at_add() {
        let ok = PluginConf::from_netconf(&netconf(serde_json::json!({
            "smc": {"probe": {"peers": ["10.0.0.2:7471", "[fd00::2]:7471"], "timeoutMs": 1500}}
        })))
        .unwrap();
        assert_eq!(ok.smc.probe.peers.len(), 2);
        assert_eq!(PluginConf::from_netconf(&netconf(serde_json::json!({}))).unwrap().smc.probe.timeout_ms, 2000);
        for bad in [
            serde_json::json!({"smc": {"probe": {"peers": ["10.0.0.2"]}}}),
            serde_json::json!({"smc": {"probe": {"peers": "10.0.0.2:7471"}}}),
            serde_json::json!({"smc": {"probe": {"timeoutMs": 5}}}),
            serde_json::json!({"smc": {"probe": {"trust": "yes"}}}),
            serde_json::json!({"smc": {"probe": {"trust": true, "peers": ["10.0.0.2:7471"]}}}),
            serde_json::json!({"smc": {"probe": {"timeout": 100}}}),
            serde_json::json!({"smc": {"reachabilityTtl": 0}}),
        ] {
            let e = PluginConf::from_netconf(&netconf(bad.clone())).unwrap_err();
            assert_eq!(u32::from(&e), 7, "{bad}: {e}");
            assert!(e.to_string().contains("smc"), "{bad}: the error names the key: {e}");
        }
    }

    #[test]
    fn typo_errors_name_the_key_path() {
        let e = PluginConf::from_netconf(&netconf(serde_json::json!({"sockmap": {"enable": true}}))).unwrap_err();
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
            assert_eq!(u32::from(&PodIdentity::from_cni_args(Some(bad)).unwrap_err()), 4, "{bad}");
        }
    }

    #[test]
    fn annotations_override_network_default() {
        let nc = netconf(serde_json::json!({
            "sockmap": {"enabled": true},
            "runtimeConfig": {ANNOTATIONS_CAPABILITY: {ANNOTATION_SOCKMAP: "false", ANNOTATION_SMC: "true"}}
        }));
        let conf = PluginConf::from_netconf(&nc).unwrap();
        let s = PodSettings::resolve(&conf, &nc).unwrap();
        assert!(!s.sockmap);
        assert_eq!(s.smc, Some(true));

        let none = netconf(serde_json::json!({"runtimeConfig": {ANNOTATIONS_CAPABILITY: null}}));
        assert!(PodSettings::resolve(&conf, &none).unwrap().sockmap, "containerd's null means no annotations");

        let bad = netconf(serde_json::json!({"runtimeConfig": {ANNOTATIONS_CAPABILITY: {ANNOTATION_SOCKMAP: "yes"}}}));
        assert_eq!(u32::from(&PodSettings::resolve(&conf, &bad).unwrap_err()), 7);
    }
}
