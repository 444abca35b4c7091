//! The two images the e2e tests need, built locally as OCI image-layout tarballs (no
//! registry is reachable) and imported with `ctr`: a static pause, and busybox with a static
//! `nbcat` (nbcat.c: nc with non-blocking sockets, the kind of program meshaccel accelerates).
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use super::Containerd;
use crate::run;

pub const PAUSE: &str = "docker.io/meshaccel-test/pause:1";
pub const BUSYBOX: &str = "docker.io/meshaccel-test/busybox:1";

/// The sandbox's only process: sleeps until told to stop, reaping nothing (it is alone).
const PAUSE_C: &str = r#"
#include <signal.h>
#include <unistd.h>
static void quit(int s) { (void)s; _exit(0); }
int main(void) {
    signal(SIGTERM, quit);
    signal(SIGINT, quit);
    for (;;) pause();
}
"#;

/// The applets the tests run inside containers.
const BUSYBOX_APPLETS: [&str; 9] = ["sh", "nc", "sha256sum", "sleep", "head", "cat", "tee", "wc", "ls"];

pub fn build_and_import(node: &Containerd) -> Result<()> {
    let work = node.dir().join("images");
    let pause_root = work.join("pause-rootfs");
    fs::create_dir_all(&pause_root)?;
    let src = work.join("pause.c");
    fs::write(&src, PAUSE_C)?;
    run("gcc", &["-static", "-Os", "-s", "-o", pause_root.join("pause").to_str().unwrap(), src.to_str().unwrap()])
        .context("build the static pause binary (gcc and libc6-dev; see tests/setup)")?;

    let bb_root = work.join("busybox-rootfs");
    fs::create_dir_all(bb_root.join("bin"))?;
    fs::create_dir_all(bb_root.join("tmp"))?;
    fs::copy("/bin/busybox", bb_root.join("bin/busybox")).context("copy /bin/busybox (busybox-static)")?;
    let nbcat = work.join("nbcat.c");
    fs::write(&nbcat, include_str!("nbcat.c"))?;
    run("gcc", &["-static", "-Os", "-s", "-o", bb_root.join("bin/nbcat").to_str().unwrap(), nbcat.to_str().unwrap()])
        .context("build the static nbcat binary")?;
    for applet in BUSYBOX_APPLETS {
        symlink("busybox", bb_root.join("bin").join(applet))?;
    }

    for (name, rootfs, entrypoint) in [(PAUSE, &pause_root, "/pause"), (BUSYBOX, &bb_root, "/bin/sh")] {
        let tar = work.join(format!("{}.tar", entrypoint.trim_start_matches('/').replace('/', "-")));
        oci_archive(name, rootfs, entrypoint, &work.join("layout"), &tar)?;
        run(
            "ctr",
            &["--address", node.socket().to_str().unwrap(), "-n", "k8s.io", "images", "import", tar.to_str().unwrap()],
        )
        .with_context(|| format!("import {name}"))?;
    }
    Ok(())
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
    let out = run("sha256sum", &[file.to_str().unwrap()])?;
    let hex = out.split_whitespace().next().context("sha256sum output")?.to_string();
    fs::rename(file, layout.join("blobs/sha256").join(&hex))?;
    Ok(format!("sha256:{hex}"))
}

/// An OCI image layout with one uncompressed layer, named `name` for containerd's import.
fn oci_archive(name: &str, rootfs: &Path, entrypoint: &str, layout: &Path, out: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(layout);
    fs::create_dir_all(layout.join("blobs/sha256"))?;
    let layer = layout.join("layer.tar");
    run(
        "tar",
        &[
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "-C",
            rootfs.to_str().unwrap(),
            "-cf",
            layer.to_str().unwrap(),
            ".",
        ],
    )?;
    let layer_size = fs::metadata(&layer)?.len();
    let layer_digest = store(layout, &layer)?;
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": [entrypoint], "Env": ["PATH=/bin"]},
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
    run("tar", &["-C", layout.to_str().unwrap(), "-cf", out.to_str().unwrap(), "oci-layout", "index.json", "blobs"])?;
    Ok(())
}
