//! End to end through a real container runtime: containerd 1.6's CRI runs the chain the
//! installer produced from a bridge conflist, for pods created the way kubelet creates them.
use std::path::Path;
use std::thread;
use std::time::Duration;

use anyhow::Result;
use meshaccel_node::bpf;
use meshaccel_node::cri::Cri;
use meshaccel_node::pins::AttachmentId;
use meshaccel_node::sockmap;
use meshaccel_tests::containerd::installer::Installer;
use meshaccel_tests::containerd::network::PRIMARY;
use meshaccel_tests::containerd::pods::kernel_uuid;
use meshaccel_tests::containerd::traffic::{send, Sink};
use meshaccel_tests::containerd::{Containerd, CriPod};
use meshaccel_tests::{run, Counters};

const OPT_OUT: (&str, &str) = ("meshaccel.io/sockmap", "false");
const BULK: u64 = 2 << 20;

fn stats(node: &Containerd) -> Counters {
    let root = node.pins().root().to_str().unwrap();
    let out = run(meshaccel_tests::binaries::meshaccel().to_str().unwrap(), &["stats", "--json", "--bpffs-root", root])
        .expect("meshaccel stats");
    serde_json::from_str(&out).unwrap()
}

/// Runs one transfer and returns what the counters saw of it.
fn measured(node: &Containerd, client: &str, sink: &Sink, bytes: u64) -> Counters {
    let before = stats(node);
    node.transfer(client, sink, bytes).unwrap();
    stats(node).since(&before)
}

fn attachment(pod: &CriPod) -> AttachmentId {
    AttachmentId::new(&pod.sandbox_id, "eth0").unwrap()
}

/// Everything of `pod` meshaccel keeps: its pinned link (kernel ids) and its record.
fn pod_state(node: &Containerd, pod: &CriPod) -> (Option<meshaccel_node::CgroupLinkInfo>, Option<String>) {
    let id = attachment(pod);
    let link = bpf::pod_link(node.pins(), &id).unwrap();
    let record = sockmap::records(&node.state_dir()).load(&id).unwrap().map(|st| serde_json::to_string(&st).unwrap());
    (link, record)
}

/// After every pod is gone: no link, no pod pin directory, no record.
fn assert_no_pod_state(node: &Containerd) {
    assert_eq!(bpf::list_pods(node.pins()).unwrap(), vec![], "pod pins left behind");
    assert!(!node.pins().pods_dir().exists() || node.pins().pods_dir().read_dir().unwrap().next().is_none());
    assert_eq!(sockmap::records(&node.state_dir()).list().unwrap(), vec![], "attachment records left behind");
}

/// The installer leaves: SIGTERM takes meshaccel out of the chain, `uninstall` removes the
/// rest; then nothing of meshaccel remains on the node.
fn uninstall(node: &Containerd, installer: Installer) {
    installer.stop().unwrap();
    let conflist: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node.conf_dir().join(PRIMARY)).unwrap()).unwrap();
    let types: Vec<&str> = conflist["plugins"].as_array().unwrap().iter().filter_map(|p| p["type"].as_str()).collect();
    assert_eq!(types, ["bridge"], "SIGTERM must take meshaccel out of the chain and leave the rest");
    node.uninstall().unwrap();
    assert!(!node.pins().root().exists(), "pins left after uninstall");
    assert!(!node.bin_dir().join("meshaccel").exists());
}

#[test]
fn pods_through_cri_are_accelerated_unless_opted_out_and_leave_nothing_behind() -> Result<()> {
    let node = Containerd::start()?;
    node.write_primary_conflist()?;
    let installer = node.start_installer()?;
    assert!(installer.adoptions().is_empty(), "no pods yet: {:?}", installer.adoptions());
    node.wait_for_cni_config("meshaccel")?;

    let server = node.run_pod("server", &[])?;
    let client = node.run_pod("client", &[])?;
    let optout = node.run_pod("optout", &[OPT_OUT])?;
    for pod in [&server, &client] {
        let (link, record) = pod_state(&node, pod);
        let link = link.unwrap_or_else(|| panic!("{} has no sock_ops link", pod.name));
        assert_eq!(link.cgroup_id, bpf::cgroup_id(&pod.cgroup)?, "{}: link is not on its pod cgroup", pod.name);
        assert!(record.unwrap().contains(&pod.uid));
    }
    assert_eq!(pod_state(&node, &optout), (None, None), "the opted-out pod was attached");

    let sink = node.start_sink(&server)?;
    let optout_sink = node.start_sink(&optout)?;
    let sender = node.start_idle(&client)?;

    let seen = measured(&node, &sender, &sink, BULK);
    assert!(seen.msgs_redirected > 0 && seen.bytes_redirected >= BULK, "client -> server not redirected: {seen:?}");

    let seen = measured(&node, &sender, &optout_sink, BULK);
    assert_eq!(
        (seen.msgs_redirected, seen.bytes_redirected),
        (0, 0),
        "traffic to the opted-out pod was redirected: {seen:?}"
    );

    for pod in [&client, &server, &optout] {
        node.stop_pod(pod)?;
        // StopPodSandbox's DEL already releases the attachment; RemovePodSandbox's repeats it.
        assert_eq!(pod_state(&node, pod), (None, None), "{} still attached after StopPodSandbox", pod.name);
        node.remove_pod(pod)?;
    }
    assert_no_pod_state(&node);
    uninstall(&node, installer);
    Ok(())
}

#[test]
fn running_pods_are_adopted_and_an_installer_restart_changes_nothing() -> Result<()> {
    let node = Containerd::start()?;
    node.write_primary_conflist()?;
    node.wait_for_cni_config("bridge")?;

    // Pods from before meshaccel: the chain is bridge only.
    let early = node.run_pod("early", &[])?;
    let early_optout = node.run_pod("early-optout", &[OPT_OUT])?;
    // Not in kubelet's layout: adoption cannot find its cgroup and must leave it alone.
    let uid = kernel_uuid()?;
    let stray = node.run_pod_in("stray", &uid, &[], Path::new(&format!("elsewhere/pod{uid}")))?;
    let early_sender = node.start_idle(&early)?;
    let early_sink = node.start_sink(&early_optout)?;
    node.transfer(&early_sender, &early_sink, BULK)?;
    assert!(!bpf::is_loaded(node.pins()), "nothing of meshaccel exists before the install");

    // What the installer's CRI client sees of them.
    let sandboxes = Cri::connect(&node.socket())?.sandboxes()?;
    let seen = |pod: &CriPod| sandboxes.iter().find(|s| s.id == pod.sandbox_id).cloned().unwrap();
    let (sb, sb_optout) = (seen(&early), seen(&early_optout));
    assert_eq!((sb.uid.as_str(), sb.namespace.as_str(), sb.name.as_str()), (early.uid.as_str(), "e2e", "early"));
    assert!(sb.ready && !sb.host_network);
    assert!(sb.netns.as_ref().is_some_and(|p| p.starts_with("/var/run/netns")), "no netns: {sb:?}");
    assert!(sb.cgroup_parent.as_ref().is_some_and(|p| p.ends_with(&format!("pod{}", early.uid))), "{sb:?}");
    assert_eq!(sb_optout.annotations.get(OPT_OUT.0).map(String::as_str), Some(OPT_OUT.1));

    let installer = node.start_installer()?;
    node.wait_for_cni_config("meshaccel")?;
    let adoptions = installer.adoptions();
    let outcome = |pod: &CriPod| adoptions.get(&pod.sandbox_id).cloned().unwrap_or_default();
    assert!(outcome(&early).starts_with("Adopted"), "{adoptions:?}");
    assert_eq!(outcome(&early_optout), "OptedOut");
    assert!(outcome(&stray).starts_with("Failed(\"no cgroup"), "{adoptions:?}");
    let (link, record) = pod_state(&node, &early);
    assert_eq!(link.expect("adopted pod has no link").cgroup_id, bpf::cgroup_id(&early.cgroup)?);
    let record: serde_json::Value = serde_json::from_str(&record.expect("adopted pod has no record"))?;
    assert_eq!(record["network"], node.network_name().as_str(), "GC would not recognise the record: {record}");
    for pod in [&early_optout, &stray] {
        assert_eq!(pod_state(&node, pod), (None, None), "{} was attached", pod.name);
    }

    // A pod started after the install; the adopted pod's new connections to it are redirected.
    let late = node.run_pod("late", &[])?;
    let late_sink = node.start_sink(&late)?;
    let seen = measured(&node, &early_sender, &late_sink, BULK);
    assert!(seen.bytes_redirected >= BULK, "adopted pod's new connection not redirected: {seen:?}");
    let seen = measured(&node, &early_sender, &early_sink, BULK);
    assert_eq!(seen.bytes_redirected, 0, "opted-out pod (adoption must honour the annotation): {seen:?}");

    // An installer restart while a connection streams: nothing changes for running pods.
    let before: Vec<_> = [&early, &late].iter().map(|p| pod_state(&node, p)).collect();
    let prog = bpf::sockops_prog_id(node.pins())?;
    let counters = stats(&node);
    let (socket, sender, sink) = (node.socket(), early_sender.clone(), late_sink.clone());
    let stream = thread::spawn(move || -> Result<String> {
        let cri = Cri::connect(&socket)?;
        // ~3 s of 32 KiB writes, so the restart happens mid-connection.
        let producer = "i=0; while [ $i -lt 30 ]; do head -c 32768 /dev/urandom; sleep 0.1; i=$((i+1)); done";
        send(&cri, &sender, &sink, producer)
    });
    thread::sleep(Duration::from_millis(800));
    installer.stop()?;
    let installer = node.start_installer()?;
    let again = installer.adoptions();
    assert!(
        [&early, &late].iter().all(|p| again.get(&p.sandbox_id).map(String::as_str) == Some("AlreadyAttached")),
        "a restart must not re-attach: {again:?}"
    );
    let sent = stream.join().unwrap()?;
    let records = node.received(&late_sink)?;
    assert_eq!(records.last(), Some(&sent), "the connection across the restart lost or reordered bytes");
    let seen = stats(&node).since(&counters);
    assert!(seen.bytes_redirected >= 30 * 32768, "the connection across the restart was not redirected: {seen:?}");
    let after: Vec<_> = [&early, &late].iter().map(|p| pod_state(&node, p)).collect();
    assert_eq!(after, before, "links or records changed across the restart");
    assert_eq!(bpf::sockops_prog_id(node.pins())?, prog, "sock_ops program replaced by a restart");

    for pod in [&early, &early_optout, &stray, &late] {
        node.stop_pod(pod)?;
        node.remove_pod(pod)?;
    }
    assert_no_pod_state(&node);
    uninstall(&node, installer);
    Ok(())
}
