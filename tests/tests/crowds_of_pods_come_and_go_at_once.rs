//! Kubelet starts and stops pods with parallel workers: a hundred pods through the real
//! chain (bridge + host-local + meshaccel) at once — the first ADDs on a node whose
//! programs are not loaded yet, then the DELs of one half racing the ADDs of the other.
//! Every ADD succeeds, every attachment is on its own pod's cgroup and passes CHECK, and
//! nothing is left afterwards. The plugin's ADD and DEL times under that load are printed.
use std::thread;
use std::time::Duration;

use meshaccel_node::bpf;
use meshaccel_node::pins::AttachmentId;
use meshaccel_node::sockmap;
use meshaccel_tests::cni::Timings;
use meshaccel_tests::{Chain, Pod, TestNode};

const PODS: usize = 100;

fn attachment(pod: &Pod) -> AttachmentId {
    AttachmentId::new(&pod.runtime_conf().container_id, &pod.runtime_conf().ifname).unwrap()
}

/// `n` pods started at once, as many pod workers do.
fn start_all(node: &TestNode, wave: &str, n: usize) -> Vec<Pod> {
    thread::scope(|s| {
        let starts: Vec<_> = (0..n).map(|i| s.spawn(move || node.pod(&format!("{wave}{i}")).start())).collect();
        starts
            .into_iter()
            .enumerate()
            .map(|(i, h)| h.join().unwrap().unwrap_or_else(|e| panic!("{wave}{i}: {e:#}")))
            .collect()
    })
}

/// StopPodSandbox: the chain's DEL (timed), then the pod's own teardown (a second DEL
/// without netns, as containerd sends).
fn stop(node: &TestNode, pod: Pod) -> Timings {
    let t = node.network(Chain::Accelerated).del_timed(pod.runtime_conf(), Some(pod.result()));
    let t = t.unwrap_or_else(|e| panic!("DEL {}: {e:#}", pod.name()));
    drop(pod);
    t
}

fn stop_all(node: &TestNode, pods: Vec<Pod>) -> Vec<Timings> {
    thread::scope(|s| {
        let stops: Vec<_> = pods.into_iter().map(|p| s.spawn(move || stop(node, p))).collect();
        stops.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn assert_attached(node: &TestNode, pod: &Pod) {
    let id = attachment(pod);
    let link = bpf::pod_link(node.pins(), &id).unwrap().unwrap_or_else(|| panic!("{}: no link", pod.name()));
    assert_eq!(link.cgroup_id, bpf::cgroup_id(pod.cgroup()).unwrap(), "{}: link on another cgroup", pod.name());
    let record =
        sockmap::records(node.state_dir()).load(&id).unwrap().unwrap_or_else(|| panic!("{}: no record", pod.name()));
    assert_eq!(record.pod_uid, pod.uid(), "{}: record of another pod", pod.name());
    pod.check().unwrap_or_else(|e| panic!("CHECK {}: {e:#}", pod.name()));
}

/// The meshaccel plugin's times out of each call's per-plugin timings.
fn plugin_times(calls: &[Timings]) -> Vec<Duration> {
    let mut v: Vec<Duration> =
        calls.iter().flat_map(|t| t.iter().filter(|p| p.plugin == "meshaccel").map(|p| p.elapsed)).collect();
    v.sort();
    v
}

fn quantiles(what: &str, times: &[Duration]) -> String {
    let q = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3;
    format!("{what}: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms", times.len(), q(0.5), q(0.99), q(1.0))
}

#[test]
fn a_hundred_pods_come_and_go_at_once() {
    let node = TestNode::new().unwrap();
    assert!(!bpf::is_loaded(node.pins()), "the first ADDs must find the programs not loaded");
    let node = &node;

    let first = start_all(node, "a", PODS / 2);
    first.iter().for_each(|p| assert_attached(node, p));
    let mut adds: Vec<Timings> = first.iter().map(|p| p.add_timings().clone()).collect();

    // The second half arrives while the first half leaves.
    let (second, mut dels) = thread::scope(|s| {
        let arriving = s.spawn(|| start_all(node, "b", PODS / 2));
        let leaving = s.spawn(|| stop_all(node, first));
        (arriving.join().unwrap(), leaving.join().unwrap())
    });
    second.iter().for_each(|p| assert_attached(node, p));
    assert_eq!(bpf::list_pods(node.pins()).unwrap().len(), PODS / 2, "links of the first half left behind");
    adds.extend(second.iter().map(|p| p.add_timings().clone()));
    dels.extend(stop_all(node, second));

    assert!(bpf::list_pods(node.pins()).unwrap().is_empty(), "pod links left behind");
    assert!(sockmap::records(node.state_dir()).list().unwrap().is_empty(), "records left behind");
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    eprintln!("{PODS} pods, {} CPUs ({cpu})", thread::available_parallelism().map_or(0, |n| n.get()));
    eprintln!("{}", quantiles("meshaccel ADD", &plugin_times(&adds)));
    eprintln!("{}", quantiles("meshaccel DEL", &plugin_times(&dels)));
}
