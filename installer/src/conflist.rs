//! The chained network configuration: the primary CNI's conflist with meshaccel's entry
//! appended after every other plugin.
//!
//! Pure functions over bytes and JSON values; [`crate::confdir`] does the file system part.
//! Everything we do not own is carried through unchanged (keys keep their order), so a
//! merge followed by [`unchain`] gives back the primary's plugins as they were.
use std::path::Path;

use serde_json::{Map, Value};

/// The `type` of our plugin entry, the name of the plugin binary.
pub const PLUGIN_TYPE: &str = "meshaccel";
/// Makes the runtime pass pod annotations (`meshaccel.io/sockmap`, …) in `runtimeConfig`.
pub const ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";
/// The CNI versions the plugin speaks; chaining (prevResult) starts at 0.3.0.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, Error> {
    Err(Error::Invalid(msg.into()))
}

/// How a runtime reads a network configuration file, decided by its extension as
/// containerd's and CRI-O's libcni loaders do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.conflist`: `{"name", "cniVersion", "plugins": [...]}`.
    List,
    /// `.conf` or `.json`: one plugin's configuration, which the runtime wraps in a list.
    Single,
}

impl Format {
    /// `None` for files the runtime ignores.
    pub fn of(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "conflist" => Some(Self::List),
            "conf" | "json" => Some(Self::Single),
            _ => None,
        }
    }
}

/// Our entry: `type`, the per-network settings, and the annotations capability (merged into
/// any `capabilities` the settings carry). Settings may not rename the plugin or network.
pub fn entry(settings: &Map<String, Value>) -> Result<Value, Error> {
    let mut e = Map::new();
    e.insert("type".into(), PLUGIN_TYPE.into());
    for (k, v) in settings {
        match k.as_str() {
            "type" | "name" | "cniVersion" => return invalid(format!("plugin settings may not set {k:?}")),
            _ => {
                e.insert(k.clone(), v.clone());
            }
        }
    }
    let caps = e.entry("capabilities").or_insert_with(|| Value::Object(Map::new()));
    let Some(caps) = caps.as_object_mut() else {
        return invalid("plugin settings: \"capabilities\" must be an object");
    };
    caps.insert(ANNOTATIONS_CAPABILITY.into(), true.into());
    Ok(Value::Object(e))
}

fn is_ours(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

/// Reads a configuration file as the runtime would and returns it as a conflist object. A
/// single configuration becomes a one-plugin list (libcni's `ConfListFromConf`): its own
/// fields, `name` and `cniVersion` included, stay in the plugin.
pub fn parse(bytes: &[u8], format: Format) -> Result<Map<String, Value>, Error> {
    let Value::Object(obj) = serde_json::from_slice::<Value>(bytes)? else {
        return invalid("the top level is not a JSON object");
    };
    let Some(name) = obj.get("name").and_then(Value::as_str).map(str::to_string) else {
        return invalid("no network \"name\"");
    };
    let list = match format {
        Format::List => obj,
        Format::Single => {
            if obj.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
                // containerd refuses it too ("network type not found"), e.g. a conflist
                // saved under a .conf name.
                return invalid("a .conf/.json configuration without a plugin \"type\"");
            }
            let mut list = Map::new();
            if let Some(v) = obj.get("cniVersion") {
                list.insert("cniVersion".into(), v.clone());
            }
            list.insert("name".into(), name.into());
            list.insert("plugins".into(), Value::Array(vec![Value::Object(obj)]));
            list
        }
    };
    check_list(&list)?;
    Ok(list)
}

fn check_list(list: &Map<String, Value>) -> Result<(), Error> {
    let Some(plugins) = list.get("plugins").and_then(Value::as_array) else {
        return invalid("no \"plugins\" array");
    };
    if plugins.is_empty() {
        return invalid("\"plugins\" is empty");
    }
    for (i, p) in plugins.iter().enumerate() {
        if p.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
            return invalid(format!("plugins[{i}] has no \"type\""));
        }
    }
    match list.get("cniVersion") {
        None => Ok(()),
        Some(Value::String(v)) if SUPPORTED_VERSIONS.contains(&v.as_str()) => Ok(()),
        Some(v) => {
            invalid(format!("cniVersion {v} cannot chain meshaccel (supported: {})", SUPPORTED_VERSIONS.join(", ")))
        }
    }
}

fn plugins_mut(list: &mut Map<String, Value>) -> &mut Vec<Value> {
    // check_list proved it is an array; a caller-built list without one gets an empty one.
    let v = list.entry("plugins").or_insert_with(|| Value::Array(vec![]));
    if !v.is_array() {
        *v = Value::Array(vec![]);
    }
    v.as_array_mut().expect("just made an array")
}

/// Whether the list runs `entry` exactly once, after every other plugin.
pub fn is_chained(list: &Map<String, Value>, entry: &Value) -> bool {
    let Some(plugins) = list.get("plugins").and_then(Value::as_array) else { return false };
    plugins.iter().filter(|p| is_ours(p)).count() == 1 && plugins.last() == Some(entry)
}

/// Makes [`is_chained`] true: drops every meshaccel entry (a stale or edited one, or
/// duplicates) and appends `entry`. Returns whether the list changed.
pub fn chain(list: &mut Map<String, Value>, entry: &Value) -> bool {
    if is_chained(list, entry) {
        return false;
    }
    let plugins = plugins_mut(list);
    plugins.retain(|p| !is_ours(p));
    plugins.push(entry.clone());
    true
}

/// Removes every meshaccel entry. Returns whether there was one.
pub fn unchain(list: &mut Map<String, Value>) -> bool {
    let plugins = plugins_mut(list);
    let before = plugins.len();
    plugins.retain(|p| !is_ours(p));
    plugins.len() != before
}

/// Whether the list has a meshaccel entry at all.
pub fn has_entry(list: &Map<String, Value>) -> bool {
    list.get("plugins").and_then(Value::as_array).is_some_and(|p| p.iter().any(is_ours))
}

/// The bytes we write: two-space indented JSON and a final newline.
pub fn render(list: &Map<String, Value>) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(list).expect("a JSON map always serialises");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn entry_carries_settings_and_the_annotations_capability() {
        let e = entry(&obj(json!({"sockmap": {"enabled": false}, "capabilities": {"portMappings": true}}))).unwrap();
        assert_eq!(
            e,
            json!({"type": "meshaccel", "sockmap": {"enabled": false},
                   "capabilities": {"portMappings": true, ANNOTATIONS_CAPABILITY: true}})
        );
        for bad in [json!({"type": "x"}), json!({"name": "n"}), json!({"capabilities": []})] {
            assert!(entry(&obj(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn chain_is_idempotent_and_unchain_restores() {
        let e = entry(&Map::new()).unwrap();
        let orig =
            obj(json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge"}, {"type": "portmap"}]}));
        let mut l = orig.clone();
        assert!(chain(&mut l, &e));
        assert!(is_chained(&l, &e));
        assert!(!chain(&mut l, &e), "second chain changes nothing");
        assert!(unchain(&mut l));
        assert_eq!(l, orig);
        assert!(!unchain(&mut l));
    }

    #[test]
    fn our_entry_must_be_last_and_alone() {
        let e = entry(&Map::new()).unwrap();
        let mut l = obj(json!({"name": "n", "plugins": [{"type": "bridge"}, e.clone(), {"type": "portmap"}]}));
        assert!(!is_chained(&l, &e));
        assert!(chain(&mut l, &e));
        assert_eq!(l["plugins"], json!([{"type": "bridge"}, {"type": "portmap"}, e]));
    }

    #[test]
    fn refuses_what_the_runtime_refuses_or_cannot_chain() {
        for (bytes, fmt) in [
            (&b"[]"[..], Format::List),
            (br#"{"plugins": [{"type": "bridge"}]}"#, Format::List),
            (br#"{"name": "n", "plugins": []}"#, Format::List),
            (br#"{"name": "n", "plugins": [{"ipam": {}}]}"#, Format::List),
            (br#"{"name": "n", "cniVersion": "0.2.0", "plugins": [{"type": "bridge"}]}"#, Format::List),
            (br#"{"name": "n", "plugins": [{"type": "bridge"}]}"#, Format::Single),
        ] {
            assert!(parse(bytes, fmt).is_err(), "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn formats_by_extension() {
        assert_eq!(Format::of(Path::new("/x/10-a.conflist")), Some(Format::List));
        assert_eq!(Format::of(Path::new("10-a.conf")), Some(Format::Single));
        assert_eq!(Format::of(Path::new("10-a.json")), Some(Format::Single));
        assert_eq!(Format::of(Path::new("10-a.conf.bak")), None);
        assert_eq!(Format::of(Path::new(".10-a.conflist.meshaccel-tmp")), None);
    }
}
