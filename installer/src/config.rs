//! The installer's settings: flags, else environment variables (clap reads both), else the
//! mounted config file (YAML or JSON, keys in camelCase), else the defaults below, which are
//! the DaemonSet's paths.
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use meshaccel_installer::conflist;
use meshaccel_node::conf::PluginConf;
use meshaccel_node::pins::{Pins, DEFAULT_ROOT};
use serde::Deserialize;
use serde_json::{Map, Value};

pub const DEFAULT_BIN_DIR: &str = "/host/opt/cni/bin";
pub const DEFAULT_CONF_DIR: &str = "/host/etc/cni/net.d";
pub const DEFAULT_PLUGIN_BINARY: &str = "/opt/meshaccel/bin/meshaccel";
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9811";

/// Every setting, each optional so that the layers can be merged.
#[derive(clap::Args, Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Layer {
    /// Host CNI bin directories (as mounted in this container) to copy the plugin into.
    #[arg(long, env = "MESHACCEL_CNI_BIN_DIRS", value_delimiter = ',')]
    pub cni_bin_dirs: Option<Vec<PathBuf>>,
    /// Host CNI configuration directory (as mounted in this container).
    #[arg(long, env = "MESHACCEL_CNI_CONF_DIR")]
    pub cni_conf_dir: Option<PathBuf>,
    /// The plugin binary shipped in this image.
    #[arg(long, env = "MESHACCEL_PLUGIN_BINARY")]
    pub plugin_binary: Option<PathBuf>,
    /// bpffs directory of the pins, shared with the plugin (written into its entry).
    #[arg(long, env = "MESHACCEL_BPFFS_ROOT")]
    pub bpffs_root: Option<PathBuf>,
    /// Mount a bpf filesystem on the root's parent if it is not on one.
    #[arg(long, env = "MESHACCEL_MOUNT_BPFFS")]
    pub mount_bpffs: Option<bool>,
    /// The plugin's per-network settings (a JSON object), copied into its conflist entry.
    #[arg(long, env = "MESHACCEL_PLUGIN_CONF", value_parser = parse_object)]
    pub plugin_conf: Option<Map<String, Value>>,
    /// Address of /readyz and /metrics; empty disables the server.
    #[arg(long, env = "MESHACCEL_LISTEN")]
    pub listen: Option<String>,
    /// A file that exists exactly while the chain is correct.
    #[arg(long, env = "MESHACCEL_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// containerd's CRI socket, to adopt pods that were running before the install.
    #[arg(long, env = "MESHACCEL_CRI_SOCKET")]
    pub cri_socket: Option<PathBuf>,
    /// Adopt running pods at start-up.
    #[arg(long, env = "MESHACCEL_ADOPT")]
    pub adopt: Option<bool>,
    /// On SIGTERM, remove our entry from the conflist.
    #[arg(long, env = "MESHACCEL_CLEANUP_CONFLIST_ON_EXIT")]
    pub cleanup_conflist_on_exit: Option<bool>,
    /// On SIGTERM, also remove the plugin binary.
    #[arg(long, env = "MESHACCEL_CLEANUP_BINARY_ON_EXIT")]
    pub cleanup_binary_on_exit: Option<bool>,
    /// Full re-check interval, on top of inotify.
    #[arg(long, env = "MESHACCEL_RESYNC_SECONDS")]
    pub resync_seconds: Option<u64>,
    /// critical, error, warning, info, debug or trace.
    #[arg(long, env = "MESHACCEL_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// This pod's UID (downward API): ties `uninstall` to the pod that ran it.
    #[arg(long, env = "MESHACCEL_POD_UID")]
    #[serde(skip)]
    pub pod_uid: Option<String>,
}

fn parse_object(s: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(s) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("expected a JSON object".into()),
        Err(e) => Err(e.to_string()),
    }
}

macro_rules! overlay {
    ($hi:ident, $lo:ident, $($f:ident),+) => { Layer { $($f: $hi.$f.or($lo.$f)),+ } };
}

impl Layer {
    /// `self` wins where it has a value.
    fn over(self, lo: Layer) -> Layer {
        overlay!(
            self,
            lo,
            cni_bin_dirs,
            cni_conf_dir,
            plugin_binary,
            bpffs_root,
            mount_bpffs,
            plugin_conf,
            listen,
            ready_file,
            cri_socket,
            adopt,
            cleanup_conflist_on_exit,
            cleanup_binary_on_exit,
            resync_seconds,
            log_level,
            pod_uid
        )
    }

    pub fn from_file(path: &Path) -> Result<Layer> {
        let text = fs::read_to_string(path).with_context(|| format!("read config file {}", path.display()))?;
        // YAML 1.2 reads JSON too.
        serde_yaml::from_str(&text).with_context(|| format!("parse config file {}", path.display()))
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub cni_bin_dirs: Vec<PathBuf>,
    pub cni_conf_dir: PathBuf,
    pub plugin_binary: PathBuf,
    pub pins: Pins,
    pub mount_bpffs: bool,
    pub plugin_conf: Map<String, Value>,
    /// [`Self::entry`] as the plugin parses it: the installer refuses to write an entry the
    /// plugin would refuse (every ADD would then fail with code 7).
    pub plugin: PluginConf,
    pub listen: Option<String>,
    pub ready_file: Option<PathBuf>,
    pub cri_socket: PathBuf,
    pub adopt: bool,
    pub cleanup_conflist_on_exit: bool,
    pub cleanup_binary_on_exit: bool,
    pub resync: Duration,
    pub log_level: slog::Level,
    pub pod_uid: String,
}

impl Config {
    /// Flags/env over the file (if any) over defaults, validated.
    pub fn resolve(cli: Layer, file: Option<&Path>) -> Result<Config> {
        let l = match file {
            Some(f) => cli.over(Layer::from_file(f)?),
            None => cli,
        };
        let plugin_conf = l.plugin_conf.unwrap_or_default();
        let pins = Pins::new(l.bpffs_root.unwrap_or_else(|| DEFAULT_ROOT.into()));
        if plugin_conf.contains_key("bpffsRoot") {
            bail!("pluginConf may not set bpffsRoot: set the installer's bpffsRoot, which it also writes into the plugin's entry");
        }
        let plugin = entry(&plugin_conf, &pins)?;
        let level = l.log_level.unwrap_or_else(|| "info".into());
        let cfg = Config {
            cni_bin_dirs: l.cni_bin_dirs.unwrap_or_else(|| vec![DEFAULT_BIN_DIR.into()]),
            cni_conf_dir: l.cni_conf_dir.unwrap_or_else(|| DEFAULT_CONF_DIR.into()),
            plugin_binary: l.plugin_binary.unwrap_or_else(|| DEFAULT_PLUGIN_BINARY.into()),
            pins,
            mount_bpffs: l.mount_bpffs.unwrap_or(true),
            plugin_conf,
            plugin,
            listen: Some(l.listen.unwrap_or_else(|| DEFAULT_LISTEN.into())).filter(|s| !s.is_empty()),
            ready_file: l.ready_file,
            cri_socket: l.cri_socket.unwrap_or_else(|| meshaccel_node::cri::DEFAULT_SOCKET.into()),
            adopt: l.adopt.unwrap_or(true),
            cleanup_conflist_on_exit: l.cleanup_conflist_on_exit.unwrap_or(true),
            cleanup_binary_on_exit: l.cleanup_binary_on_exit.unwrap_or(false),
            resync: Duration::from_secs(l.resync_seconds.unwrap_or(60).max(1)),
            log_level: meshaccel_node::logging::parse_level(&level).with_context(|| {
                format!("log level {level:?} is not one of critical, error, warning, info, debug, trace")
            })?,
            pod_uid: l.pod_uid.unwrap_or_default(),
        };
        if cfg.cni_bin_dirs.is_empty() {
            bail!("cniBinDirs is empty");
        }
        for p in cfg.cni_bin_dirs.iter().chain([&cfg.cni_conf_dir, &cfg.plugin_binary, &cfg.pins.root().to_path_buf()])
        {
            if !p.is_absolute() {
                bail!("{} must be an absolute path", p.display());
            }
        }
        Ok(cfg)
    }

    /// Our conflist entry: the plugin settings plus the pin root we load into.
    pub fn entry(&self) -> Value {
        conflist::entry(&settings(&self.plugin_conf, &self.pins)).expect("validated in resolve")
    }

    /// What `meshaccel-installer config` prints.
    pub fn effective(&self) -> Value {
        serde_json::json!({
            "cniBinDirs": self.cni_bin_dirs,
            "cniConfDir": self.cni_conf_dir,
            "pluginBinary": self.plugin_binary,
            "bpffsRoot": self.pins.root(),
            "mountBpffs": self.mount_bpffs,
            "listen": self.listen.as_deref().unwrap_or(""),
            "readyFile": self.ready_file,
            "criSocket": self.cri_socket,
            "adopt": self.adopt,
            "cleanupConflistOnExit": self.cleanup_conflist_on_exit,
            "cleanupBinaryOnExit": self.cleanup_binary_on_exit,
            "resyncSeconds": self.resync.as_secs(),
            "logLevel": self.log_level.as_str().to_lowercase(),
            "stateDir": self.state_dir(),
            "entry": self.entry(),
        })
    }

    /// The plugin's `stateDir` (attachment records; also holds the uninstall marker).
    pub fn state_dir(&self) -> PathBuf {
        self.plugin.state_dir.clone()
    }
}

fn settings(plugin_conf: &Map<String, Value>, pins: &Pins) -> Map<String, Value> {
    let mut settings = plugin_conf.clone();
    settings.insert("bpffsRoot".into(), pins.root().to_string_lossy().into_owned().into());
    settings
}

/// Builds our entry and parses it with the plugin's own schema.
fn entry(plugin_conf: &Map<String, Value>, pins: &Pins) -> Result<PluginConf> {
    let entry = conflist::entry(&settings(plugin_conf, pins)).context("pluginConf")?;
    let Value::Object(entry) = entry else { unreachable!("an entry is an object") };
    PluginConf::from_entry(&entry).map_err(|e| anyhow::anyhow!("pluginConf: the plugin would refuse it: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("meshaccel-cfg-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.yaml");
        fs::write(
            &file,
            "cniConfDir: /file/net.d\ncniBinDirs: [/file/bin]\npluginConf:\n  sockmap: {enabled: false}\n",
        )
        .unwrap();
        let cli = Layer { cni_conf_dir: Some("/flag/net.d".into()), ..Default::default() };
        let c = Config::resolve(cli, Some(&file)).unwrap();
        assert_eq!(c.cni_conf_dir, Path::new("/flag/net.d"));
        assert_eq!(c.cni_bin_dirs, vec![PathBuf::from("/file/bin")]);
        assert_eq!(c.pins.root(), Path::new(DEFAULT_ROOT));
        assert!(!c.plugin.sockmap.enabled);
        assert_eq!(c.entry()["bpffsRoot"], json!(DEFAULT_ROOT));
        assert_eq!(c.entry()["capabilities"][conflist::ANNOTATIONS_CAPABILITY], json!(true));

        fs::write(&file, "{\"cniConfDir\": \"/json/net.d\"}").unwrap();
        assert_eq!(Config::resolve(Layer::default(), Some(&file)).unwrap().cni_conf_dir, Path::new("/json/net.d"));
        fs::write(&file, "pluginConf:\n  sockmap: {rules: [{cidr: 10.0.0.1/8, action: accept}]}\n").unwrap();
        let e = Config::resolve(Layer::default(), Some(&file)).unwrap_err();
        assert!(format!("{e:#}").contains("host bits"), "rules are validated at start-up: {e:#}");
        fs::write(&file, "cniConfDri: /typo\n").unwrap();
        assert!(Config::resolve(Layer::default(), Some(&file)).is_err(), "unknown keys are typos");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_conflicting_or_relative_settings() {
        let with_conf = |v: Value| Layer { plugin_conf: v.as_object().cloned(), ..Default::default() };
        assert!(Config::resolve(with_conf(json!({"bpffsRoot": "/x"})), None).is_err());
        assert!(Config::resolve(with_conf(json!({"type": "x"})), None).is_err());
        let rel = Layer { cni_conf_dir: Some("net.d".into()), ..Default::default() };
        assert!(Config::resolve(rel, None).is_err());
        let level = Layer { log_level: Some("loud".into()), ..Default::default() };
        assert!(Config::resolve(level, None).is_err());
    }

    /// Everything the plugin would refuse at ADD (code 7) is refused before it is written.
    #[test]
    fn refuses_a_plugin_conf_the_plugin_would_refuse() {
        let with_conf = |v: Value| Layer { plugin_conf: v.as_object().cloned(), ..Default::default() };
        for bad in [
            json!({"smc": {"enabeld": true}}),
            json!({"smc": {"probe": {"peers": ["10.0.0.2"]}}}),
            json!({"log": {"level": "loud"}}),
            json!({"log": {"fiel": "/x"}}),
            json!({"stateDir": "relative"}),
            json!({"failurePolicy": "sometimes"}),
            json!({"sockmap": {"enable": true}}),
        ] {
            let e = Config::resolve(with_conf(bad.clone()), None).unwrap_err();
            assert!(format!("{e:#}").contains("the plugin would refuse it"), "{bad}: {e:#}");
        }
        let ok =
            Config::resolve(with_conf(json!({"smc": {"enabled": true}, "failurePolicy": "closed"})), None).unwrap();
        assert!(ok.plugin.smc.enabled);
    }
}
