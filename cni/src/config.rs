//! One CNI call's input — network conf, `CNI_ARGS`, runtimeConfig annotations and the
//! CNI_* environment — validated into an [`Invocation`] before anything is created, so a
//! bad input can only ever produce an error and no state. The conf schema itself is
//! `meshaccel_node::conf`, shared with the installer.
use std::collections::BTreeMap;
use std::path::PathBuf;

use meshaccel_node::conf::{ConfError, PluginConf, PodIdentity, PodSettings, ANNOTATIONS_CAPABILITY};
use meshaccel_node::feature::{Failure, Pod};
use meshaccel_node::pins::AttachmentId;
use rscni_plugin::error::Error;
use rscni_plugin::types::{Args, NetConf};

/// The CNI error for a node-side [`Failure`], with the spec's variant where it has one.
pub fn cni_error(f: Failure) -> Error {
    use meshaccel_node::feature::codes;
    match f.code {
        codes::INVALID_ENV => Error::InvalidEnvValue(f.details),
        codes::INVALID_NETWORK_CONFIG => Error::InvalidNetworkConfig(f.details),
        codes::IO_FAILURE => Error::IOFailure(f.details),
        codes::NOT_AVAILABLE => Error::PluginNotAvailable(f.details),
        code => Error::Custom(code, f.msg, f.details),
    }
}

fn conf_error(e: ConfError) -> Error {
    cni_error(Failure::from(e))
}

pub fn plugin_conf(netconf: &NetConf) -> Result<PluginConf, Error> {
    PluginConf::from_entry(&netconf.custom.clone().into_iter().collect()).map_err(conf_error)
}

/// The pod's annotations from runtimeConfig (containerd sends `null` for a pod without any:
/// a nil Go map).
fn annotations(netconf: &NetConf) -> Result<BTreeMap<String, String>, Error> {
    let rc = netconf.runtime_config.as_ref();
    let Some(v) = rc.and_then(|rc| rc.custom.get(ANNOTATIONS_CAPABILITY)).filter(|v| !v.is_null()) else {
        return Ok(BTreeMap::new());
    };
    serde_json::from_value(v.clone())
        .map_err(|e| Error::InvalidNetworkConfig(format!("runtimeConfig {ANNOTATIONS_CAPABILITY}: {e}")))
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
    /// `None` for DEL, which undoes whatever ADD did whatever the pod asks now.
    pub settings: Option<PodSettings>,
}

impl Invocation {
    /// For ADD and CHECK: rscni has already validated container id and ifname against the
    /// spec; the attachment id re-checks them as path components.
    pub fn from_args(args: &Args) -> Result<Self, Error> {
        let mut inv = Self::parse(args, true)?;
        inv.settings = Some(PodSettings::resolve(&inv.conf, &annotations(args.config())?).map_err(conf_error)?);
        Ok(inv)
    }

    /// For DEL: the pod identity is not needed to undo an attachment, so malformed
    /// `CNI_ARGS` must not make teardown fail (the runtime would retry it for ever).
    pub fn for_teardown(args: &Args) -> Result<Self, Error> {
        Self::parse(args, false)
    }

    fn parse(args: &Args, strict_pod_identity: bool) -> Result<Self, Error> {
        let conf = plugin_conf(args.config())?;
        let container_id = args.container_id().map(|c| c.to_string()).unwrap_or_default();
        let ifname = args.ifname().map(|i| i.to_string()).unwrap_or_default();
        let attachment =
            AttachmentId::new(&container_id, &ifname).map_err(|e| Error::InvalidEnvValue(e.to_string()))?;
        Ok(Self {
            network: args.config().name.clone(),
            conf,
            attachment,
            container_id,
            ifname,
            netns: args.netns().cloned(),
            pod: match PodIdentity::from_cni_args(args.args()) {
                Err(_) if !strict_pod_identity => PodIdentity::default(),
                other => other.map_err(conf_error)?,
            },
            settings: None,
        })
    }

    /// The pod as the features see it (ADD and CHECK only: they resolve the settings).
    pub fn pod(&self) -> Pod<'_> {
        Pod {
            conf: &self.conf,
            network: &self.network,
            attachment: &self.attachment,
            container_id: &self.container_id,
            ifname: &self.ifname,
            netns: self.netns.as_deref(),
            identity: &self.pod,
            settings: self.settings.expect("settings are resolved for ADD and CHECK"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshaccel_node::conf::{ANNOTATION_SMC, ANNOTATION_SOCKMAP};
    use serde_json::{json, Value};

    fn netconf(extra: Value) -> NetConf {
        let mut base = json!({"cniVersion": "1.0.0", "name": "net", "type": "meshaccel"});
        base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn conf_errors_are_code_7_and_name_the_key() {
        for bad in [
            json!({"bpffsRoot": "relative"}),
            json!({"sockmap": {"enable": true}}),
            json!({"smc": {"probe": {"peers": ["10.0.0.2"]}}}),
        ] {
            let e = plugin_conf(&netconf(bad.clone())).unwrap_err();
            assert_eq!(u32::from(&e), 7, "{bad}: {e}");
        }
        let e = plugin_conf(&netconf(json!({"sockmap": {"enable": true}}))).unwrap_err();
        assert!(e.to_string().contains("sockmap"), "{e}");
    }

    #[test]
    fn runtime_config_annotations_override_network_default() {
        let nc = netconf(json!({
            "sockmap": {"enabled": true},
            "runtimeConfig": {ANNOTATIONS_CAPABILITY: {ANNOTATION_SOCKMAP: "false", ANNOTATION_SMC: "true"}}
        }));
        let conf = plugin_conf(&nc).unwrap();
        let s = PodSettings::resolve(&conf, &annotations(&nc).unwrap()).unwrap();
        assert!(!s.sockmap);
        assert_eq!(s.smc, Some(true));
        let none = netconf(json!({"runtimeConfig": {ANNOTATIONS_CAPABILITY: null}}));
        assert!(annotations(&none).unwrap().is_empty(), "containerd's null means no annotations");
        let bad = netconf(json!({"runtimeConfig": {ANNOTATIONS_CAPABILITY: {ANNOTATION_SOCKMAP: "yes"}}}));
        let e = PodSettings::resolve(&conf, &annotations(&bad).unwrap()).map_err(conf_error).unwrap_err();
        assert_eq!(u32::from(&e), 7);
    }

    #[test]
    fn hostile_cni_args_are_code_4() {
        for bad in ["K8S_POD_UID=../../x", "garbage"] {
            let e = PodIdentity::from_cni_args(Some(bad)).map_err(conf_error).unwrap_err();
            assert_eq!(u32::from(&e), 4, "{bad}");
        }
    }
}
