//! OCI image-layout archives written directly (no registry, no image builder): one
//! uncompressed layer from a root filesystem directory, named for `ctr images import`.
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::run;

/// Writes `out`, an image named `name` (`io.containerd.image.name`) whose single layer is
/// `rootfs` and whose runtime config (`Entrypoint`, `Cmd`, `Env`, …) is `config`.
pub fn archive(name: &str, rootfs: &Path, config: Value, out: &Path) -> Result<()> {
    let layout = out.with_extension("layout");
    let _ = fs::remove_dir_all(&layout);
    let result = write_layout(name, rootfs, config, &layout).and_then(|()| {
        run("tar", &["-C", path(&layout)?, "-cf", path(out)?, "oci-layout", "index.json", "blobs"]).map(drop)
    });
    let _ = fs::remove_dir_all(&layout);
    result
}

/// Unpacks an archive [`archive`] wrote: its layers into `rootfs`; returns the runtime config.
pub fn unpack(archive: &Path, rootfs: &Path) -> Result<Value> {
    let blob = |digest: &Value| -> Result<Vec<u8>> {
        let hex = digest.as_str().and_then(|d| d.strip_prefix("sha256:")).context("sha256 digest")?;
        let out =
            std::process::Command::new("tar").arg("-xOf").arg(archive).arg(format!("blobs/sha256/{hex}")).output()?;
        anyhow::ensure!(out.status.success(), "{hex} not in {}", archive.display());
        Ok(out.stdout)
    };
    let index: Value = serde_json::from_str(&run("tar", &["-xOf", path(archive)?, "index.json"])?)?;
    let manifest: Value = serde_json::from_slice(&blob(&index["manifests"][0]["digest"])?)?;
    let config: Value = serde_json::from_slice(&blob(&manifest["config"]["digest"])?)?;
    fs::create_dir_all(rootfs)?;
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        let tar = rootfs.with_extension("layer.tar");
        fs::write(&tar, blob(&layer["digest"])?)?;
        let done = run("tar", &["-C", path(rootfs)?, "-xf", path(&tar)?]);
        fs::remove_file(&tar)?;
        done?;
    }
    Ok(config["config"].clone())
}

fn write_layout(name: &str, rootfs: &Path, config: Value, layout: &Path) -> Result<()> {
    fs::create_dir_all(layout.join("blobs/sha256"))?;
    let layer = layout.join("layer.tar");
    // Reproducible: sorted, root-owned, mtime 0.
    let flags = ["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--mtime=@0"];
    run("tar", &[&flags[..], &["-C", path(rootfs)?, "-cf", path(&layer)?, "."]].concat())?;
    let layer_size = fs::metadata(&layer)?.len();
    let layer_digest = store(layout, &layer)?;
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = put_blob(layout, config.to_string().as_bytes())?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = put_blob(layout, manifest.to_string().as_bytes())?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"io.containerd.image.name": name},
        }],
    });
    fs::write(layout.join("index.json"), index.to_string())?;
    fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

fn path(p: &Path) -> Result<&str> {
    p.to_str().with_context(|| format!("{} is not UTF-8", p.display()))
}

/// Writes `blob` into the layout's blob store; returns its descriptor fields.
fn put_blob(layout: &Path, blob: &[u8]) -> Result<(String, usize)> {
    let tmp = layout.join("blob.tmp");
    fs::write(&tmp, blob)?;
    let digest = store(layout, &tmp)?;
    Ok((digest, blob.len()))
}

/// Moves a file into `blobs/sha256/<digest>`; returns `sha256:<digest>`.
fn store(layout: &Path, file: &Path) -> Result<String> {
    let out = run("sha256sum", &[path(file)?])?;
    let hex = out.split_whitespace().next().context("sha256sum output")?.to_string();
    fs::rename(file, layout.join("blobs/sha256").join(&hex))?;
    Ok(format!("sha256:{hex}"))
}
