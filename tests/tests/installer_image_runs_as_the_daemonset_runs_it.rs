//! The installer image (tests/image/build) run through containerd's CRI as kubelet runs
//! manifests/daemonset.yaml: everything about the pod comes from the manifest; only the
//! hostPaths point at this test's node instead of the host's real directories.
//!
//! The plugin itself runs on the host with the conflist entry's paths, which are the
//! DaemonSet's hostPaths; on this node those are stand-ins, so the test runs the plugin
//! the container installed with the entry's paths mapped to them, as the host would see them.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use meshaccel_node::bpf;
use meshaccel_node::cri::api;
use meshaccel_node::pins::{AttachmentId, Pins};
use meshaccel_node::sockmap;
use meshaccel_tests::cni::{NetworkList, RuntimeConf};
use meshaccel_tests::containerd::daemonset::DaemonSetPod;
use meshaccel_tests::containerd::network::PRIMARY;
use meshaccel_tests::containerd::pods::kernel_uuid;
use meshaccel_tests::containerd::{images, Containerd, CriPod};
use meshaccel_tests::manifests::Manifests;
use meshaccel_tests::{oci, run, Counters};
use serde_json::{json, Value};

const INSTALLER: &str = "installer";
const RESPONDER: &str = "rdma-responder";
const BULK: u64 = 2 << 20;
/// As long as kubelet would wait for a DaemonSet pod to become Ready in a rollout.
const READY_WITHIN: Duration = Duration::from_secs(60);

fn chain(node: &Containerd) -> Vec<Value> {
    let list: Value = serde_json::from_slice(&fs::read(node.conf_dir().join(PRIMARY)).unwrap()).unwrap();
    list["plugins"].as_array().unwrap().clone()
}

fn types(node: &Containerd) -> Vec<String> {
    chain(node).iter().map(|p| p["type"].as_str().unwrap().to_string()).collect()
}

/// Runs the DaemonSet's `containers` and waits for the installer's probes, as a rollout does.
fn run_ready(
    node: &Containerd,
    manifests: &Manifests,
    containers: &[&str],
    host_path: &dyn Fn(&str) -> Result<PathBuf>,
) -> DaemonSetPod {
    let pod = node.run_daemonset_pod(manifests, containers, host_path).unwrap();
    pod.wait_probe(node, INSTALLER, "readinessProbe", READY_WITHIN).unwrap();
    pod.wait_probe(node, INSTALLER, "livenessProbe", READY_WITHIN).unwrap();
    pod
}

/// The node's stand-ins for the DaemonSet's hostPaths (shared mounts, as on a systemd host).
fn stand_ins(node: &Containerd) -> Result<impl Fn(&str) -> Result<PathBuf> + '_> {
    let bpffs = node.shared_bpffs()?;
    let cgroup = node.shared_bind(Path::new("/sys/fs/cgroup"))?;
    // The node's own netns directory (pods' CNI_NETNS), as a shared mount.
    let netns_dir = node.dir().join("netns");
    std::fs::create_dir_all(&netns_dir)?;
    let netns = node.shared_bind(&netns_dir)?;
    Ok(move |path: &str| -> Result<PathBuf> {
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
    })
}

/// The config's bpffsRoot, /sys/fs/bpf/meshaccel in the container.
fn pins(host_path: &dyn Fn(&str) -> Result<PathBuf>) -> Result<Pins> {
    Ok(Pins::new(host_path("/sys/fs/bpf")?.join("meshaccel")))
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
    let host_path = stand_ins(&node)?;
    let pins = pins(&host_path)?;

    let pod = run_ready(&node, &manifests, &[INSTALLER], &host_path);
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
    let pod = run_ready(&node, &manifests, &[INSTALLER], &host_path);
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

/// The records of a CRI container log (`<time> <stream> <tag> <line>`) that are JSON:
/// (stream, record).
fn cri_log_records(text: &str) -> Vec<(String, Value)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, ' ');
            let (_, stream, _) = (f.next()?, f.next()?, f.next()?);
            Some((stream.to_string(), serde_json::from_str(f.next()?).ok()?))
        })
        .collect()
}

/// Polls the container's log for a record `matches` accepts.
fn wait_record(pod: &DaemonSetPod, container: &str, what: &str, matches: impl Fn(&str, &Value) -> bool) -> Value {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let logs = pod.logs(container);
        if let Some((_, r)) = cri_log_records(&logs).into_iter().find(|(s, r)| matches(s, r)) {
            return r;
        }
        assert!(Instant::now() < deadline, "no {what} in the {container} log:\n{logs}");
        thread::sleep(Duration::from_millis(200));
    }
}

fn stats(pins: &Pins) -> Counters {
    let root = pins.root().to_str().unwrap();
    let out = run(meshaccel_tests::binaries::meshaccel().to_str().unwrap(), &["stats", "--json", "--bpffs-root", root])
        .expect("meshaccel stats");
    serde_json::from_str(&out).unwrap()
}

/// The chain's meshaccel entry with its paths as the host sees them, i.e. the hostPath
/// stand-ins (the log file is no hostPath: the node's own).
fn entry_on_this_node(node: &Containerd, host_path: &dyn Fn(&str) -> Result<PathBuf>) -> Result<Value> {
    let mut entry = chain(node).pop().unwrap();
    assert_eq!(
        (entry["stateDir"].as_str(), entry["bpffsRoot"].as_str()),
        (Some("/run/meshaccel"), Some("/sys/fs/bpf/meshaccel"))
    );
    entry["stateDir"] = json!(host_path("/run/meshaccel")?);
    entry["bpffsRoot"] = json!(host_path("/sys/fs/bpf")?.join("meshaccel"));
    entry["log"]["file"] = json!(node.dir().join("plugin.log"));
    Ok(entry)
}

#[test]
fn the_daemonset_pod_adopts_running_pods_runs_the_responder_and_shows_plugin_logs() -> Result<()> {
    let mut manifests = Manifests::load()?;
    let node = Containerd::start()?;
    images::import_installer(&node)?;
    node.write_primary_conflist()?;
    node.wait_for_cni_config("bridge")?;
    let host_path = stand_ins(&node)?;
    let pins = pins(&host_path)?;

    // Pods from before the DaemonSet: the chain is bridge only.
    let early: Vec<CriPod> =
        ["early-client", "early-server"].iter().map(|n| node.run_pod(n, &[])).collect::<Result<_>>()?;
    let sender = node.start_idle(&early[0])?;
    // This node's kubelet cgroups start below the host's root: the operator says where, as
    // on a node whose kubelet has a cgroup root of its own.
    manifests.edit_config_map("meshaccel-config", "config.yaml", |c| {
        c["pluginConf"]["cgroupRoot"] = json!(node.cgroup_root());
    })?;

    let pod = run_ready(&node, &manifests, &[INSTALLER, RESPONDER], &host_path);
    let adopted = wait_record(&pod, INSTALLER, "adoption", |stream, r| {
        // The installer's own records are on stderr, the plugin's on stdout.
        stream == "stderr" && r["msg"] == "adopted running pods"
    });
    assert_eq!(adopted["adopted"], 2, "{adopted}\n{}", pod.logs(INSTALLER));
    for p in &early {
        let id = AttachmentId::new(&p.sandbox_id, "eth0")?;
        let link =
            bpf::pod_link(&pins, &id)?.unwrap_or_else(|| panic!("{} not adopted: {}", p.name, pod.logs(INSTALLER)));
        assert_eq!(link.cgroup_id, bpf::cgroup_id(&p.cgroup)?, "{}: link is not on its pod cgroup", p.name);
        assert!(sockmap::records(&node.state_dir()).load(&id)?.is_some(), "{}: no record", p.name);
    }
    // A listener from before the adoption stays plain (docs/design.md); a new one is not.
    let sink = node.start_sink(&early[1])?;
    let before = stats(&pins);
    node.transfer(&sender, &sink, BULK)?;
    let seen = stats(&pins).since(&before);
    assert!(seen.bytes_redirected >= BULK, "the adopted pods' new connection was not redirected: {seen:?}");

    // No RDMA device here: the responder stays up, waiting, and its log says why.
    let waiting = wait_record(&pod, RESPONDER, "wait for a device", |_, r| {
        r["msg"].as_str().is_some_and(|m| m.contains("retrying"))
    });
    assert!(waiting["error"].as_str().is_some_and(|e| e.contains("rdma_create_event_channel")), "{waiting}");
    let mut rs = node.cri().runtime();
    let req = api::ContainerStatusRequest { container_id: pod.containers[RESPONDER].clone(), verbose: false };
    let status = node.cri().block_on(rs.container_status(req))?.into_inner().status.unwrap();
    assert_eq!(status.state, api::ContainerState::ContainerRunning as i32, "{status:?}\n{}", pod.logs(RESPONDER));

    // A pod the plugin cannot accelerate (kubelet made no cgroup for it): under the
    // ConfigMap's failurePolicy open, ADD passes it through and warns; the warning is in
    // the installer container's stdout.
    let list = NetworkList {
        name: node.network_name(),
        cni_version: "1.0.0".into(),
        plugins: vec![entry_on_this_node(&node, &host_path)?],
        cni_path: vec![node.bin_dir()],
    };
    let uid = kernel_uuid()?;
    let rt = RuntimeConf {
        container_id: format!("warned{}", node.tag),
        netns: node.netns().path().display().to_string(),
        ifname: "eth0".into(),
        args: vec![
            ("K8S_POD_NAMESPACE".into(), "e2e".into()),
            ("K8S_POD_NAME".into(), "warned".into()),
            ("K8S_POD_UID".into(), uid.clone()),
        ],
        ..Default::default()
    };
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": rt.netns}],
        "ips": [{"address": "10.99.0.2/24", "interface": 0}]});
    let inv = list.exec("ADD", &list.plugins[0], &rt, Some(&prev))?;
    assert!(inv.elapsed < Duration::from_secs(10), "ADD took {:?}", inv.elapsed);
    let warned = wait_record(&pod, INSTALLER, "forwarded plugin warning", |stream, r| {
        stream == "stdout" && r["source"] == "plugin" && r["pod"] == "e2e/warned"
    });
    assert_eq!((warned["cmd"].as_str(), warned["level"].as_str()), (Some("ADD"), Some("WARN")), "{warned}");
    assert!(warned["error"].as_str().unwrap().contains(&format!("no cgroup for pod {uid}")), "{warned}");
    assert_eq!(warned["containerID"], rt.container_id.as_str());
    list.exec("DEL", &list.plugins[0], &rt, Some(&prev))?;

    // Deleting the pod stops both containers within the grace period, cleanly.
    let start = Instant::now();
    let codes = node.stop_daemonset_pod(&pod)?;
    assert_eq!(codes[INSTALLER], 0, "{}", pod.logs(INSTALLER));
    assert_eq!(codes[RESPONDER], 0, "the responder ignored SIGTERM: {}", pod.logs(RESPONDER));
    assert!(start.elapsed() < Duration::from_secs(10), "stopping took {:?}", start.elapsed());
    assert_eq!(types(&node), ["bridge"]);
    Ok(())
}
