//! The images the e2e tests need, built locally as OCI image-layout tarballs (no registry is
//! reachable) and imported with `ctr`: a static pause, busybox with a static `nbcat`
//! (nbcat.c: nc with non-blocking sockets, the kind of program meshaccel accelerates), and,
//! for the tests that run the DaemonSet, the installer image of `tests/image/build`.
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::Containerd;
use crate::{binaries, oci, run};

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
        oci::archive(name, rootfs, json!({"Entrypoint": [entrypoint], "Env": ["PATH=/bin"]}), &tar)?;
        import(node, &tar).with_context(|| format!("import {name}"))?;
    }
    Ok(())
}

/// The installer image as `tests/image/build` makes it (from this test's own build: its
/// profile and target dir), imported into the node. Returns the archive.
pub fn import_installer(node: &Containerd) -> Result<PathBuf> {
    let (target, profile) = binaries::cargo_target();
    let out = node.dir().join("images/installer.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("image/build");
    let built = Command::new(&script)
        .arg(&out)
        .env("PROFILE", profile)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    let log = String::from_utf8_lossy(&built.stderr);
    ensure!(built.status.success(), "tests/image/build failed ({}): {log}", built.status);
    import(node, &out).context("import the installer image")?;
    Ok(out)
}

/// `ctr images import` into the CRI's namespace, `k8s.io`.
fn import(node: &Containerd, tar: &Path) -> Result<()> {
    let (socket, tar) = (node.socket(), tar.display().to_string());
    run("ctr", &["--address", socket.to_str().unwrap(), "-n", "k8s.io", "images", "import", &tar]).map(drop)
}
