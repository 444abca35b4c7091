//! Every YAML in manifests/ parses, the kustomization lists them all, and the DaemonSet
//! has what a node installer needs. The ConfigMap's config is checked by the installer
//! binary itself (`meshaccel-installer config`), so a key it would refuse fails here.
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// (file name, parsed document) of every YAML file.
fn documents() -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    for entry in fs::read_dir(manifests_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        let doc: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        docs.push((path.file_name().unwrap().to_str().unwrap().to_string(), doc));
    }
    docs.sort_by(|a, b| a.0.cmp(&b.0));
    docs
}

fn of_kind(kind: &str) -> Vec<Value> {
    documents().into_iter().map(|(_, d)| d).filter(|d| d["kind"] == kind).collect()
}

fn one(kind: &str) -> Value {
    let mut v = of_kind(kind);
    assert_eq!(v.len(), 1, "exactly one {kind}");
    v.remove(0)
}

fn daemonset() -> Value {
    one("DaemonSet")
}

fn pod_spec() -> Value {
    daemonset()["spec"]["template"]["spec"].clone()
}

fn container_named(name: &str) -> Value {
    let c = pod_spec()["containers"].as_array().unwrap().clone();
    c.into_iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no container {name}"))
}

fn container() -> Value {
    container_named("installer")
}

/// The ConfigMap's config.yaml as the installer resolves it.
fn effective_config() -> Value {
    let cm = one("ConfigMap");
    // One file per call: the tests of this binary run in parallel threads of one process.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("meshaccel-manifest-config-{}-{n}.yaml", std::process::id()));
    fs::write(&file, cm["data"]["config.yaml"].as_str().expect("config.yaml in the ConfigMap")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meshaccel-installer"))
        .arg("config")
        .env("MESHACCEL_CONFIG", &file)
        .env_remove("MESHACCEL_CNI_CONF_DIR")
        .env_remove("MESHACCEL_CNI_BIN_DIRS")
        .output()
        .unwrap();
    let _ = fs::remove_file(&file);
    assert!(out.status.success(), "installer refuses the ConfigMap: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_file_parses_and_the_kustomization_lists_them_all() {
    let docs = documents();
    let files: BTreeSet<String> = docs.iter().map(|(f, _)| f.clone()).filter(|f| f != "kustomization.yaml").collect();
    let k = one("Kustomization");
    let listed: BTreeSet<String> =
        k["resources"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
    assert_eq!(listed, files);
    assert_eq!(k["namespace"], "meshaccel");
    let image = container()["image"].as_str().unwrap().to_string();
    assert!(k["images"].as_array().unwrap().iter().any(|i| image.starts_with(i["name"].as_str().unwrap())));
    for (f, d) in &docs {
        assert!(d["apiVersion"].is_string() && d["kind"].is_string(), "{f}");
        if d["kind"] != "Kustomization" && d["kind"] != "Namespace" {
            assert_eq!(d["metadata"]["namespace"], "meshaccel", "{f}");
        }
    }
}

#[test]
fn namespace_admits_privileged_pods() {
    let ns = one("Namespace");
    assert_eq!(ns["metadata"]["name"], "meshaccel");
    assert_eq!(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged");
}

#[test]
fn least_rbac_is_none() {
    for kind in ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"] {
        assert!(of_kind(kind).is_empty(), "the installer reads nothing from the API server: no {kind}");
    }
    let sa = one("ServiceAccount");
    assert_eq!(sa["automountServiceAccountToken"], false);
    assert_eq!(pod_spec()["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(pod_spec()["automountServiceAccountToken"], false);
}

#[test]
fn daemonset_runs_privileged_on_every_node_before_the_network() {
    let ds = daemonset();
    let spec = pod_spec();
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        ds["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
    );
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    assert_eq!(spec["hostNetwork"], true);
    assert!(
        spec["tolerations"].as_array().unwrap().iter().any(|t| t == &json!({"operator": "Exists"})),
        "tolerates every taint"
    );
    let c = container();
    assert_eq!(c["securityContext"]["privileged"], true);
    let env = c["env"].as_array().unwrap();
    assert!(env
        .iter()
        .any(|e| e["name"] == "MESHACCEL_POD_UID" && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"));
}

#[test]
fn every_node_answers_rdma_reachability_probes() {
    let names: Vec<Value> = pod_spec()["containers"].as_array().unwrap().iter().map(|c| c["name"].clone()).collect();
    assert_eq!(names, [json!("installer"), json!("rdma-responder")]);
    let r = container_named("rdma-responder");
    assert_eq!(r["image"], container()["image"], "the responder is the plugin binary the installer ships");
    let cmd: Vec<&str> = r["command"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(cmd[..2], ["/opt/meshaccel/bin/meshaccel", "rdma-responder"]);
    let listen = cmd[cmd.iter().position(|a| *a == "--listen").unwrap() + 1];
    assert!(listen.parse::<std::net::SocketAddr>().is_ok(), "--listen {listen}");
    assert_eq!(r["securityContext"]["privileged"], true, "needs /dev/infiniband");
    assert!(r["resources"]["limits"]["memory"].is_string(), "bounded memory");
}

/// The probe's `dns:` peer names the headless Service, which selects the DaemonSet's pods and
/// carries the port the responders listen on: nodes find each other without a list.
#[test]
fn smc_peers_are_found_through_the_responder_service() {
    let svc = one("Service");
    assert_eq!(svc["spec"]["clusterIP"], "None", "headless: one record per node, not a virtual IP");
    let labels = &daemonset()["spec"]["template"]["metadata"]["labels"];
    let selector = svc["spec"]["selector"].as_object().unwrap();
    assert!(!selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v), "selects the installer pods");
    let cmd = container_named("rdma-responder")["command"].clone();
    let cmd: Vec<&str> = cmd.as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let listen: std::net::SocketAddr = cmd[cmd.iter().position(|a| *a == "--listen").unwrap() + 1].parse().unwrap();
    assert_eq!(svc["spec"]["ports"][0]["port"], listen.port());
    let want = format!(
        "dns:{}.{}.svc.cluster.local:{}",
        svc["metadata"]["name"].as_str().unwrap(),
        svc["metadata"]["namespace"].as_str().unwrap(),
        listen.port()
    );
    let probe = &effective_config()["entry"]["smc"]["probe"];
    assert_eq!(probe["peers"], json!([want]));
    assert!(!probe["nameservers"].as_array().unwrap().is_empty(), "the node's resolver rarely knows cluster.local");
}

#[test]
fn probes_hit_the_port_the_installer_listens_on() {
    let cfg = effective_config();
    let port: u64 = cfg["listen"].as_str().unwrap().rsplit_once(':').unwrap().1.parse().unwrap();
    let c = container();
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], port);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(c["ports"].as_array().unwrap().iter().any(|p| p["containerPort"] == port));
    let ann = &daemonset()["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/port"], port.to_string());
}

/// hostPath volume mounted at `mount_path`: (host path, mount).
fn host_mount(mount_path: &str) -> (String, Value) {
    let c = container();
    let m = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == mount_path)
        .unwrap_or_else(|| panic!("nothing mounted at {mount_path}"))
        .clone();
    let vol = pod_spec()["volumes"].as_array().unwrap().iter().find(|v| v["name"] == m["name"]).unwrap().clone();
    (vol["hostPath"]["path"].as_str().unwrap_or_else(|| panic!("{mount_path} is not a hostPath")).to_string(), m)
}

#[test]
fn host_paths_are_mounted_where_the_config_looks() {
    let cfg = effective_config();
    let bin_dirs = cfg["cniBinDirs"].as_array().unwrap();
    assert_eq!(bin_dirs.len(), 1);
    assert_eq!(host_mount(bin_dirs[0].as_str().unwrap()).0, "/opt/cni/bin");
    assert_eq!(host_mount(cfg["cniConfDir"].as_str().unwrap()).0, "/etc/cni/net.d");

    // Shared with the plugin, which runs on the host: identical paths inside and out.
    let (bpffs, m) = host_mount("/sys/fs/bpf");
    assert_eq!(bpffs, "/sys/fs/bpf");
    assert_eq!(m["mountPropagation"], "Bidirectional", "a bpffs the installer mounts must reach the host");
    assert!(cfg["bpffsRoot"].as_str().unwrap().starts_with("/sys/fs/bpf/"));
    assert_eq!(cfg["entry"]["bpffsRoot"], cfg["bpffsRoot"]);
    assert_eq!(host_mount("/sys/fs/cgroup").0, "/sys/fs/cgroup");
    let state = cfg["stateDir"].as_str().unwrap();
    assert_eq!(host_mount(state).0, state);

    let socket = Path::new(cfg["criSocket"].as_str().unwrap());
    let (host, _) = host_mount(socket.parent().unwrap().to_str().unwrap());
    assert_eq!(Path::new(&host), socket.parent().unwrap(), "the socket's directory, as on the host");

    // The config file comes from the ConfigMap.
    let env = container()["env"].clone();
    let config_path =
        env.as_array().unwrap().iter().find(|e| e["name"] == "MESHACCEL_CONFIG").unwrap()["value"].clone();
    let m = container()["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| config_path.as_str().unwrap().starts_with(m["mountPath"].as_str().unwrap()))
        .unwrap()
        .clone();
    let vol = pod_spec()["volumes"].as_array().unwrap().iter().find(|v| v["name"] == m["name"]).unwrap().clone();
    assert_eq!(vol["configMap"]["name"], one("ConfigMap")["metadata"]["name"]);
}

#[test]
fn configmap_chains_the_plugin_with_annotations_and_its_flags() {
    let cfg = effective_config();
    let entry = &cfg["entry"];
    assert_eq!(entry["type"], "meshaccel");
    assert_eq!(entry["capabilities"]["io.kubernetes.cri.pod-annotations"], true);
    assert_eq!(entry["sockmap"]["enabled"], true);
    assert_eq!(entry["failurePolicy"], "open");
    assert_eq!(cfg["cleanupConflistOnExit"], true);
    assert_eq!(cfg["adopt"], true);
}
