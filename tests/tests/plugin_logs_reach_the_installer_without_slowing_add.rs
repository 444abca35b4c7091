//! The plugin's records reach the installer's stdout (what `kubectl logs` shows), through the
//! real CNI chain containerd runs; and an installer that is absent or not reading never
//! fails nor holds up an ADD, whose records stay in the plugin's log file.
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use meshaccel_node::log_forward;
use meshaccel_tests::cni::{Invocation, RuntimeConf};
use meshaccel_tests::containerd::pods::kernel_uuid;
use meshaccel_tests::containerd::Containerd;
use meshaccel_tests::{Chain, Pod, TestNode};
use serde_json::{json, Value};

/// What an ADD may take at most here: a plugin waiting on the installer would hang until
/// the harness kills it (a minute), an ADD that does not wait takes milliseconds.
const ADD_BOUND: Duration = Duration::from_secs(10);
const WARNING: &str = "cannot accelerate this pod";

fn json_lines(text: &str) -> impl Iterator<Item = Value> + '_ {
    text.lines().filter_map(|l| serde_json::from_str(l).ok())
}

#[test]
fn a_failed_add_through_containerd_is_in_the_installers_stdout_with_the_pod() {
    let node = Containerd::start().unwrap();
    node.write_primary_conflist().unwrap();
    let installer = node.start_installer().unwrap();
    node.wait_for_cni_config("meshaccel").unwrap();

    // Not in kubelet's cgroup layout: under the node's failurePolicy closed, ADD fails.
    let uid = kernel_uuid().unwrap();
    let err = node.run_pod_in("lost", &uid, &[], Path::new(&format!("elsewhere/pod{uid}"))).unwrap_err();
    assert!(format!("{err:#}").contains(&format!("no cgroup for pod {uid}")), "{err:#}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let forwarded = loop {
        let text = installer.log_text();
        let found = json_lines(&text).find(|r| r["source"] == "plugin" && r["cmd"] == "ADD" && r["level"] == "ERRO");
        if let Some(r) = found {
            break r;
        }
        assert!(Instant::now() < deadline, "no forwarded ADD error in the installer's output:\n{text}");
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(forwarded["pod"], "e2e/lost", "{forwarded}");
    assert!(forwarded["msg"].as_str().unwrap().contains(WARNING), "{forwarded}");
    assert!(forwarded["error"].as_str().unwrap().contains(&uid), "{forwarded}");
    assert!(forwarded["containerID"].as_str().is_some_and(|id| !id.is_empty()), "{forwarded}");
    assert_eq!(forwarded["component"], "meshaccel");
    // The same record is in the plugin's own file.
    let file = std::fs::read_to_string(node.plugin_log()).unwrap();
    assert!(json_lines(&file).any(|r| r["containerID"] == forwarded["containerID"] && r["level"] == "ERRO"), "{file}");
    installer.stop().unwrap();
    assert!(!log_forward::socket_path(&node.state_dir()).exists(), "an orderly exit removes the socket");
}

/// ADD under failurePolicy open for a pod kubelet made no cgroup for: it warns.
fn warning_add(node: &TestNode, pod: &Pod) -> Invocation {
    let mut rt: RuntimeConf = pod.runtime_conf().clone();
    for (_, uid) in rt.args.iter_mut().filter(|(k, _)| k == "K8S_POD_UID") {
        uid.replace_range(..8, "00000000");
    }
    let mut conf = node.meshaccel_conf();
    conf["failurePolicy"] = json!("open");
    let inv = node.call_meshaccel("ADD", &conf, &rt, Some(pod.result())).unwrap();
    assert!(inv.success(), "{inv:?}");
    assert!(inv.elapsed < ADD_BOUND, "ADD took {:?}", inv.elapsed);
    inv
}

fn warnings_in_file(node: &TestNode) -> usize {
    json_lines(&node.plugin_log()).filter(|r| r["msg"].as_str().is_some_and(|m| m.contains(WARNING))).count()
}

#[test]
fn without_a_reading_installer_add_neither_fails_nor_waits() {
    let node = TestNode::new().unwrap();
    let pod = node.pod("nolisten").chain(Chain::BridgeOnly).start().unwrap();
    std::fs::create_dir_all(node.state_dir()).unwrap();
    let socket = log_forward::socket_path(node.state_dir());

    // No installer on the node.
    assert!(!socket.exists());
    warning_add(&node, &pod);
    assert_eq!(warnings_in_file(&node), 1, "{}", node.plugin_log());

    // A socket left by a killed installer.
    drop(UnixDatagram::bind(&socket).unwrap());
    warning_add(&node, &pod);
    assert_eq!(warnings_in_file(&node), 2, "{}", node.plugin_log());
    std::fs::remove_file(&socket).unwrap();

    // An installer that stopped reading: its queue is full.
    let stuck = UnixDatagram::bind(&socket).unwrap();
    let filler = UnixDatagram::unbound().unwrap();
    filler.set_nonblocking(true).unwrap();
    filler.connect(&socket).unwrap();
    let mut queued = 0;
    while filler.send(b"{}").is_ok() {
        queued += 1;
    }
    assert!(queued > 0, "nothing could be queued");
    for _ in 0..3 {
        warning_add(&node, &pod);
    }
    let log = node.plugin_log();
    assert_eq!(warnings_in_file(&node), 5, "{log}");
    let reports: Vec<Value> =
        json_lines(&log).filter(|r| r["msg"].as_str().unwrap().contains("not forwarded")).collect();
    assert_eq!(reports.len(), 3, "each ADD says it could not forward: {log}");
    assert!(reports.iter().all(|r| r["records"].as_u64() >= Some(1)), "{reports:?}");
    // The stuck installer got nothing past what was queued before.
    stuck.set_nonblocking(true).unwrap();
    let mut buf = [0; 16];
    let received = std::iter::from_fn(|| stuck.recv(&mut buf).ok()).count();
    assert_eq!(received, queued, "the full queue took more records");
    std::fs::remove_file(&socket).unwrap();
}
