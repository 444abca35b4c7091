//! manifests/ as a cluster would get it from `kubectl apply -k`: every YAML document, and
//! the kustomization's image override applied.
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub struct Manifests {
    docs: Vec<Value>,
}

impl Manifests {
    pub fn load() -> Result<Self> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
        let mut docs = Vec::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = fs::read_to_string(&path)?;
                docs.push(serde_yaml::from_str(&text).with_context(|| format!("parse {}", path.display()))?);
            }
        }
        Ok(Self { docs })
    }

    /// The only document of `kind` (named `name`, when given).
    pub fn one(&self, kind: &str, name: Option<&str>) -> Result<&Value> {
        let mut found =
            self.docs.iter().filter(|d| d["kind"] == kind && name.is_none_or(|n| d["metadata"]["name"] == n));
        match (found.next(), found.next()) {
            (Some(d), None) => Ok(d),
            (None, _) => bail!("no {kind} {name:?} in manifests/"),
            _ => bail!("more than one {kind} {name:?} in manifests/"),
        }
    }

    /// Edits the YAML held in `key` of ConfigMap `name`, as an operator edits
    /// manifests/configmap.yaml before applying it.
    pub fn edit_config_map(&mut self, name: &str, key: &str, edit: impl FnOnce(&mut Value)) -> Result<()> {
        self.one("ConfigMap", Some(name))?;
        let cm = self.docs.iter_mut().find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name).unwrap();
        let text = cm["data"][key].as_str().with_context(|| format!("ConfigMap {name} has no {key}"))?;
        let mut data: Value = serde_yaml::from_str(text).with_context(|| format!("parse {name}/{key}"))?;
        edit(&mut data);
        cm["data"][key] = Value::String(serde_yaml::to_string(&data)?);
        Ok(())
    }

    /// A container's image after the kustomization's `images:` (newName, newTag).
    pub fn image(&self, container: &Value) -> Result<String> {
        let image = container["image"].as_str().context("container without image")?;
        let (repo, tag) = image.rsplit_once(':').filter(|(_, t)| !t.contains('/')).unwrap_or((image, "latest"));
        let kustomization = self.one("Kustomization", None)?;
        let rule = kustomization["images"].as_array().into_iter().flatten().find(|i| i["name"] == repo);
        let Some(rule) = rule else { return Ok(image.to_string()) };
        let repo = rule["newName"].as_str().unwrap_or(repo);
        Ok(format!("{repo}:{}", rule["newTag"].as_str().unwrap_or(tag)))
    }
}
