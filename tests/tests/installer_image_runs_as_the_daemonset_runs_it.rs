//! The installer image (tests/image/build) run through containerd's CRI as kubelet runs
//! manifests/daemonset.yaml: everything about the pod comes from the manifest; only the
//! hostPaths point at this test's node instead of the host's real directories.
//!
//! Not here: adoption of running pods by the containerised installer. The ConfigMap's
//! `cgroupRoot` is the host's (auto) while this node's pods live in a private cgroup subtree,
//! so it would need a ConfigMap of the test's own; containerd_e2e.rs tests adoption with the
//! same binary run directly.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use meshaccel_node::bpf;
use meshaccel_node::cri::api;
use meshaccel_node::pins::Pins;
use meshaccel_tests::containerd::daemonset::DaemonSetPod;
use meshaccel_tests::containerd::network::PRIMARY;
use meshaccel_tests::containerd::{images, Containerd};
use meshaccel_tests::manifests::Manifests;
use meshaccel_tests::oci;
use serde_json::Value;

const INSTALLER: &str = "installer";
/// As long as kubelet would wait for a DaemonSet pod to become Ready in a rollout.
const READY_WITHIN: Duration = Duration::from_secs(60);

fn chain(node: &Containerd) -> Vec<Value> {
    let list: Value = serde_json::from_slice(&fs::read(node.conf_dir().join(PRIMARY)).unwrap()).unwrap();
    list["plugins"].as_array().unwrap().clone()
}

fn types(node: &Containerd) -> Vec<String> {
    chain(node).iter().map(|p| p["type"].as_str().unwrap().to_string()).collect()
}

/// Runs the DaemonSet's installer and waits for its readiness probe, as a rollout does.
fn run_ready(node: &Containerd, manifests: &Manifests, host_path: &dyn Fn(&str) -> Result<PathBuf>) -> DaemonSetPod {
    let pod = node.run_daemonset_pod(manifests, &[INSTALLER], host_path).unwrap();
    pod.wait_probe(node, INSTALLER, "readinessProbe", READY_WITHIN).unwrap();
    pod.wait_probe(node, INSTALLER, "livenessProbe", READY_WITHIN).unwrap();
    pod
}

/// Runs `cmd` in the image's root filesystem (chroot: its own loader and libraries only).
fn in_image(rootfs: &Path, cmd: &[&str]) -> Output {
    Command::new("/usr/sbin/chroot").arg(rootfs).args(cmd).env_clear().output().unwrap()
}

#[test]
fn the_image_is_built_here_and_is_the_one_the_manifest_runs() -> Result<()> {
    let manifests = Manifests::load()?;
    let node = Containerd::start()?;
    let archive = images::import_installer(&node)?;

    // Every container's image reference in the manifest is the one the script tagged.
    let ds = manifests.one("DaemonSet", None)?;
    for c in ds["spec"]["template"]["spec"]["containers"].as_array().unwrap() {
        let image = manifests.image(c)?;
        let mut is = node.cri().images();
        let spec = api::ImageSpec { image: image.clone(), ..Default::default() };
        let status =
            node.cri().block_on(is.image_status(api::ImageStatusRequest { image: Some(spec), verbose: false }));
        let status = status?.into_inner().image;
        assert!(
            status.is_some(),
            "{image} ({}, manifests/daemonset.yaml) is not what tests/image/build tagged",
            c["name"]
        );
        let command = c["command"][0].as_str().unwrap();
        let rootfs = node.dir().join("installer-rootfs");
        if !rootfs.exists() {
            let config = oci::unpack(&archive, &rootfs)?;
            assert_eq!(config["Entrypoint"][0], "/usr/local/bin/meshaccel-installer", "{config}");
        }
        assert!(rootfs.join(command.trim_start_matches('/')).is_file(), "{command} is not in the image");
    }

    // The libraries the binaries link, and those the responder dlopens, are in the image:
    // with no RDMA device here it gets as far as the RDMA CM.
    let rootfs = node.dir().join("installer-rootfs");
    let out = in_image(&rootfs, &["/usr/local/bin/meshaccel-installer", "config"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Without a device the responder keeps running and says why it cannot listen yet.
    let mut responder = Command::new("/usr/sbin/chroot")
        .arg(&rootfs)
        .args(["/opt/meshaccel/bin/meshaccel", "rdma-responder", "--listen", "127.0.0.1:1"])
        .env_clear()
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(responder.stderr.take().unwrap()), &mut line)?;
    let still_running = responder.try_wait()?.is_none();
    responder.kill()?;
    responder.wait()?;
    assert!(still_running, "the responder exited without an RDMA device: {line}");
    assert!(
        line.contains("retrying") && line.contains("rdma_create_event_channel") && !line.contains("not loadable"),
        "{line}"
    );
    Ok(())
}

#[test]
fn the_image_installs_from_its_container_and_uninstalls_through_exec() -> Result<()> {
    let manifests = Manifests::load()?;
    let node = Containerd::start()?;
    images::import_installer(&node)?;

    node.write_primary_conflist()?;
    // The node's stand-ins for the host directories, shared mounts as on a systemd host.
    let bpffs = node.shared_bpffs()?;
    let cgroup = node.shared_bind(Path::new("/sys/fs/cgroup"))?;
    // The node's own netns directory (pods' CNI_NETNS), as a shared mount.
    let netns_dir = node.dir().join("netns");
    std::fs::create_dir_all(&netns_dir)?;
    let netns = node.shared_bind(&netns_dir)?;
    let host_path = |path: &str| -> Result<PathBuf> {
        Ok(match path {
            "/opt/cni/bin" => node.bin_dir(),
            "/etc/cni/net.d" => node.conf_dir(),
            "/sys/fs/bpf" => bpffs.clone(),
            "/sys/fs/cgroup" => cgroup.clone(),
            "/run/containerd" => node.socket().parent().unwrap().to_path_buf(),
            "/run/meshaccel" => node.state_dir(),
            "/run/netns" => netns.clone(),
            other => bail!("hostPath {other} has no stand-in on the test node: add one here"),
        })
    };
    // The config's bpffsRoot, /sys/fs/bpf/meshaccel in the container.
    let pins = Pins::new(bpffs.join("meshaccel"));

    let pod = run_ready(&node, &manifests, &host_path);
    assert_eq!(types(&node), ["bridge", "meshaccel"], "{}", pod.logs(INSTALLER));
    assert_eq!(chain(&node)[1]["bpffsRoot"], "/sys/fs/bpf/meshaccel");
    assert!(bpf::is_loaded(&pins), "no pins under {}: {}", pins.root().display(), pod.logs(INSTALLER));
    assert!(node.bin_dir().join("meshaccel").exists(), "plugin not copied to the CNI bin dir");
    node.wait_for_cni_config("meshaccel")?;

    // Deleting the pod: SIGTERM within the grace period takes the entry out; pins stay.
    let codes = node.stop_daemonset_pod(&pod)?;
    assert_eq!(codes[INSTALLER], 0, "installer exit on SIGTERM: {}", pod.logs(INSTALLER));
    assert_eq!(types(&node), ["bridge"], "StopPodSandbox must leave the chain as the primary CNI wrote it");
    assert!(bpf::is_loaded(&pins), "the pins outlive the installer pod");

    // The DaemonSet's next pod chains again; `meshaccel-installer uninstall` in it, as
    // docs/installer.md says to run it, removes everything.
    let pod = run_ready(&node, &manifests, &host_path);
    assert_eq!(types(&node), ["bridge", "meshaccel"]);
    let exec = node.exec(&pod.containers[INSTALLER], &["meshaccel-installer", "uninstall"], Duration::from_secs(30));
    exec.unwrap_or_else(|e| panic!("{e:#}\n{}", pod.logs(INSTALLER)));
    assert_eq!(types(&node), ["bridge"]);
    assert!(!node.bin_dir().join("meshaccel").exists(), "plugin left in the CNI bin dir");
    assert!(!pins.root().exists(), "pins left after uninstall");
    // The daemon sees the uninstall at its next reconcile and stays out of the way.
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let (code, body) = pod.probe_once(&node, INSTALLER, "readinessProbe")?;
        if code == 503 && body.contains("uninstalled") {
            break;
        }
        assert!(Instant::now() < deadline, "still {code} {body} after the uninstall");
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(types(&node), ["bridge"], "the daemon re-chained after the uninstall");
    assert_eq!(node.stop_daemonset_pod(&pod)?[INSTALLER], 0, "{}", pod.logs(INSTALLER));
    Ok(())
}
