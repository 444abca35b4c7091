//! The installer binary against temp CNI dirs, a private bpffs root and real cgroups:
//! install, drift repair, readiness, SIGTERM cleanup, restart, uninstall, clear errors.
mod support;

use std::fs;

use meshaccel_common::PodConfig;
use meshaccel_node::bpf;
use meshaccel_node::pins::AttachmentId;
use nix::sys::signal::Signal;
use support::{wait_for, Cgroup, Node, PLUGIN};

fn plugin_count(node: &Node, name: &str) -> usize {
    node.read_list(name)["plugins"].as_array().unwrap().iter().filter(|p| p["type"] == "meshaccel").count()
}

#[test]
fn installs_then_repairs_every_kind_of_drift() {
    let node = Node::new("drift");
    node.conf_from("flannel.conflist", "10-flannel.conflist");
    let d = node.start();
    d.wait_ready();
    assert!(node.ready_file.exists(), "ready file follows /readyz");
    assert!(node.is_chained("10-flannel.conflist"));
    assert_eq!(node.installed_plugin().as_deref(), Some(PLUGIN));
    assert!(bpf::is_loaded(&node.pins));
    assert_eq!(d.metric("meshaccel_installer_installs_total"), Some(1));
    assert_eq!(d.metric("meshaccel_installer_ready"), Some(1));
    assert_eq!(d.metric("meshaccel_accelerated_pods"), Some(0));
    assert_eq!(d.metric("meshaccel_sockmap_sockets_inserted_total"), Some(0));

    // The primary CNI rewrites its conflist (flannel does so on restart).
    node.conf_from("flannel.conflist", "10-flannel.conflist");
    wait_for("conflist re-chained", || node.is_chained("10-flannel.conflist"));

    // Another network configuration now sorts first: the runtime will use that one.
    node.conf_from("calico.conflist", "05-calico.conflist");
    wait_for("new primary chained", || node.is_chained("05-calico.conflist"));

    // Our binary is deleted.
    fs::remove_file(node.bin.join("meshaccel")).unwrap();
    wait_for("binary back", || node.installed_plugin().as_deref() == Some(PLUGIN));

    // Somebody edits our entry.
    let mut list = node.read_list("05-calico.conflist");
    list["plugins"].as_array_mut().unwrap().last_mut().unwrap()["failurePolicy"] = "closed".into();
    fs::write(node.conf.join("05-calico.conflist"), serde_json::to_vec(&list).unwrap()).unwrap();
    wait_for("edited entry replaced", || node.is_chained("05-calico.conflist"));
    assert_eq!(plugin_count(&node, "05-calico.conflist"), 1);

    wait_for(&format!("repairs counted: {}", d.logs()), || {
        d.metric("meshaccel_installer_repairs_total{what=\"conflist\"}") == Some(3)
            && d.metric("meshaccel_installer_repairs_total{what=\"binary\"}") == Some(1)
    });
    assert_eq!(d.metric("meshaccel_installer_installs_total"), Some(1));
    d.wait_ready();
}

#[test]
fn readiness_follows_the_chain_and_bad_input_is_left_alone() {
    let node = Node::new("ready");
    let d = node.start();
    // No configuration yet: the primary CNI has not started.
    wait_for("503 with the reason", || {
        d.get("/readyz").is_some_and(|(c, b)| c == 503 && b.contains("no CNI network configuration"))
    });
    assert!(!node.ready_file.exists());
    assert_eq!(d.metric("meshaccel_installer_ready"), Some(0));

    // The primary CNI writes a single .conf: converted into a chained .conflist.
    node.conf_from("bridge.conf", "10-bridge.conf");
    d.wait_ready();
    assert!(node.is_chained("10-bridge.conflist"));
    assert!(!node.conf.join("10-bridge.conf").exists());

    // A broken file sorting first makes the chain incorrect; it is never rewritten.
    let broken = node.conf_from("invalid.conflist", "00-broken.conflist");
    let original = fs::read(&broken).unwrap();
    wait_for("not ready", || !node.ready_file.exists());
    let (code, body) = d.get("/readyz").unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("00-broken.conflist") && body.contains("not valid JSON"), "{body}");
    assert_eq!(fs::read(&broken).unwrap(), original, "invalid file untouched");

    fs::remove_file(&broken).unwrap();
    d.wait_ready();
    assert!(node.ready_file.exists());
    assert!(d.metric("meshaccel_installer_reconcile_errors_total").unwrap() >= 2);
}

#[test]
fn sigterm_removes_the_entry_and_keeps_pods_accelerated() {
    let node = Node::new("term");
    node.conf_from("istio.conflist", "10-istio.conflist");
    let d = node.start();
    d.wait_ready();
    let cg = Cgroup::new("term");
    let id = AttachmentId::new("sandbox1", "eth0").unwrap();
    let cfg = PodConfig::enabled();
    bpf::attach_pod(&node.pins, &id, &cg.0, cfg).unwrap();
    wait_for("pod counted", || d.metric("meshaccel_accelerated_pods") == Some(1));

    let (status, logs) = d.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}: {logs}");
    assert!(!node.has_entry("10-istio.conflist"), "entry removed");
    let types: Vec<_> =
        node.read_list("10-istio.conflist")["plugins"].as_array().unwrap().iter().map(|p| p["type"].clone()).collect();
    assert_eq!(types, ["calico", "portmap", "istio-cni"], "other plugins kept in order");
    assert!(!node.ready_file.exists());
    assert_eq!(node.installed_plugin().as_deref(), Some(PLUGIN), "binary kept by default");
    assert!(bpf::is_loaded(&node.pins), "pins kept");
    assert!(bpf::pod_link(&node.pins, &id).unwrap().is_some(), "pod link kept");
    bpf::detach_pod(&node.pins, &id).unwrap();

    // Configured to remove the binary too.
    let mut cmd = node.command("run");
    cmd.arg("--cleanup-binary-on-exit=true");
    let d = node.start_with(cmd);
    d.wait_ready();
    let (status, logs) = d.stop(Signal::SIGTERM);
    assert!(status.success(), "{logs}");
    assert_eq!(node.installed_plugin(), None);
}

#[test]
fn restart_changes_nothing_for_running_pods() {
    let node = Node::new("restart");
    node.conf_from("calico.conflist", "10-calico.conflist");
    let d = node.start();
    d.wait_ready();
    let cg = Cgroup::new("restart");
    let id = AttachmentId::new("sandbox2", "eth0").unwrap();
    bpf::attach_pod(&node.pins, &id, &cg.0, PodConfig::enabled()).unwrap();
    let link = bpf::pod_link(&node.pins, &id).unwrap().unwrap();
    let prog = bpf::sockops_prog_id(&node.pins).unwrap();
    let chained = fs::read(node.conf.join("10-calico.conflist")).unwrap();
    let inode = |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
    let conf_inode = inode(&node.conf.join("10-calico.conflist"));
    let bin_inode = inode(&node.bin.join("meshaccel"));

    // A crash (no cleanup), then a restart: nothing is rewritten, reloaded or duplicated.
    let _ = d.stop(Signal::SIGKILL);
    let d = node.start();
    d.wait_ready();
    assert_eq!(plugin_count(&node, "10-calico.conflist"), 1);
    assert_eq!(fs::read(node.conf.join("10-calico.conflist")).unwrap(), chained);
    assert_eq!(inode(&node.conf.join("10-calico.conflist")), conf_inode, "conflist not rewritten");
    assert_eq!(inode(&node.bin.join("meshaccel")), bin_inode, "binary not rewritten");
    assert_eq!(bpf::sockops_prog_id(&node.pins).unwrap(), prog, "programs not reloaded");
    assert_eq!(bpf::pod_link(&node.pins, &id).unwrap(), Some(link), "pod link untouched");
    assert_eq!(bpf::read_pod_config(&node.pins, link.cgroup_id).unwrap().flags, PodConfig::SOCKMAP);

    // A graceful restart (SIGTERM removes the entry) puts exactly one entry back.
    let (status, _) = d.stop(Signal::SIGTERM);
    assert!(status.success());
    let d = node.start();
    d.wait_ready();
    assert_eq!(plugin_count(&node, "10-calico.conflist"), 1);
    assert_eq!(bpf::pod_link(&node.pins, &id).unwrap(), Some(link));
    drop(d);
}

#[test]
fn uninstall_removes_everything_and_the_daemon_does_not_put_it_back() {
    let node = Node::new("uninst");
    node.conf_from("flannel.conflist", "10-flannel.conflist");
    let mut run = node.command("run");
    run.env("MESHACCEL_POD_UID", "6c1b0d6e-0000-4000-8000-000000000001");
    let d = node.start_with(run);
    d.wait_ready();
    let cg = Cgroup::new("uninst");
    let id = AttachmentId::new("sandbox3", "eth0").unwrap();
    bpf::attach_pod(&node.pins, &id, &cg.0, PodConfig::enabled()).unwrap();
    let record = serde_json::json!({"network": "cbr0", "containerId": "sandbox3", "ifname": "eth0", "podUid": "u",
        "podNamespace": null, "podName": null, "cgroup": cg.0, "cgroupId": 1, "sockmap": true});
    fs::create_dir_all(&node.state).unwrap();
    fs::write(node.state.join(format!("{id}.json")), record.to_string()).unwrap();

    let mut un = node.command("uninstall");
    un.env("MESHACCEL_POD_UID", "6c1b0d6e-0000-4000-8000-000000000001");
    let out = node.run(un);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!node.has_entry("10-flannel.conflist"));
    assert_eq!(node.installed_plugin(), None);
    assert!(!node.pins.root().exists(), "pins, maps, programs and pod links removed");
    assert!(!node.state.join(format!("{id}.json")).exists(), "attachment record removed");

    // The daemon of that pod sees the uninstall and stays out of the way, even on drift.
    wait_for("not ready after uninstall", || {
        d.get("/readyz").is_some_and(|(c, b)| c == 503 && b.contains("uninstalled"))
    });
    node.conf_from("flannel.conflist", "10-flannel.conflist");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!node.has_entry("10-flannel.conflist"), "daemon re-chained after uninstall");
    assert_eq!(node.installed_plugin(), None);
    let (status, logs) = d.stop(Signal::SIGTERM);
    assert!(status.success(), "{logs}");

    // A new DaemonSet (another pod UID) installs again.
    let mut run = node.command("run");
    run.env("MESHACCEL_POD_UID", "6c1b0d6e-0000-4000-8000-000000000002");
    let d = node.start_with(run);
    d.wait_ready();
    assert!(node.is_chained("10-flannel.conflist"));
}

/// One-shot `install` with extra arguments: (success, stderr).
fn install(node: &Node, extra: &[&str]) -> (bool, String) {
    let mut cmd = node.command("install");
    cmd.args(extra);
    let out = node.run(cmd);
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn clear_errors_for_what_the_node_lacks() {
    let node = Node::new("errors");
    let (ok, err) = install(&node, &[]);
    assert!(!ok && err.contains("no CNI network configuration"), "{err}");

    let broken = node.conf_from("invalid.conflist", "10-broken.conflist");
    let (ok, err) = install(&node, &[]);
    assert!(!ok && err.contains("not valid JSON") && err.contains("left untouched"), "{err}");
    assert_eq!(fs::read(&broken).unwrap(), fs::read(support::testdata("invalid.conflist")).unwrap());
    fs::remove_file(&broken).unwrap();

    let notcg = node.dir.join("not-a-cgroup");
    fs::create_dir_all(&notcg).unwrap();
    let conf = serde_json::json!({"stateDir": node.state, "cgroupRoot": notcg}).to_string();
    let (ok, err) = install(&node, &["--plugin-conf", &conf]);
    assert!(!ok && err.contains("needs cgroup v2"), "{err}");

    let (ok, err) = install(&node, &["--plugin-conf", r#"{"bpffsRoot": "/elsewhere"}"#]);
    assert!(!ok && err.contains("may not set bpffsRoot"), "{err}");

    // A conf the plugin would refuse at every ADD (code 7) never reaches the chain.
    let flannel = node.conf_from("flannel.conflist", "10-flannel.conflist");
    for typo in [r#"{"smc": {"enabeld": true}}"#, r#"{"log": {"levle": "debug"}}"#] {
        let (ok, err) = install(&node, &["--plugin-conf", typo]);
        assert!(!ok && err.contains("the plugin would refuse it"), "{typo}: {err}");
        assert_eq!(fs::read(&flannel).unwrap(), fs::read(support::testdata("flannel.conflist")).unwrap(), "{typo}");
    }

    let (ok, err) = install(&node, &[]);
    assert!(ok, "{err}");
    assert!(node.is_chained("10-flannel.conflist"));
}

#[test]
fn read_only_conf_dir_is_reported_and_left_alone() {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let node = Node::new("rofs");
    let file = node.conf_from("flannel.conflist", "10-flannel.conflist");
    let original = fs::read(&file).unwrap();
    // A read-only bind mount of the conf dir onto itself, as a read-only hostPath would be.
    mount(Some(&node.conf), &node.conf, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = umount2(self.0, MntFlags::MNT_DETACH);
        }
    }
    let _guard = Unmount(&node.conf);
    let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(None::<&str>, &node.conf, None::<&str>, ro, None::<&str>).unwrap();

    let (ok, err) = install(&node, &[]);
    assert!(!ok && err.contains("read-only file system"), "{err}");
    assert_eq!(fs::read(&file).unwrap(), original);
}

#[test]
fn mounts_bpffs_only_when_allowed() {
    use nix::mount::{umount2, MntFlags};
    let node = Node::new("bpffs");
    node.conf_from("flannel.conflist", "10-flannel.conflist");
    // A pin root whose parent is a plain directory: no bpf filesystem there.
    let parent = node.dir.join("bpf");
    let root = parent.join("meshaccel");
    let (ok, err) = install(&node, &["--bpffs-root", root.to_str().unwrap(), "--mount-bpffs=false"]);
    assert!(!ok && err.contains("not on a bpf filesystem"), "{err}");
    assert!(!node.has_entry("10-flannel.conflist"), "nothing installed");

    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = umount2(&self.0, MntFlags::MNT_DETACH);
        }
    }
    let _guard = Unmount(parent.clone());
    let (ok, err) = install(&node, &["--bpffs-root", root.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(err.contains("mounted a bpf filesystem"), "{err}");
    assert!(bpf::is_loaded(&meshaccel_node::pins::Pins::new(&root)));
}

/// The plugin, which added the UEID, removes it: uninstall runs the image's plugin binary
/// (here a stand-in that records how it was called) only when a UEID was recorded, and
/// leaves the per-pod SMC records for the pods' DEL. (The real removal, and a UEID that
/// predates meshaccel staying, are tested on an SMC kernel: tests/vm/guest/smc-doctor.sh.)
#[test]
fn uninstall_removes_the_ueids_meshaccel_added() {
    // This kernel has no SMC: the UEID table went with the module, so uninstall only has the
    // records to remove (the VM's smc-doctor.sh removes a live UEID the same way).
    let node = Node::new("ueid");
    let ueids = node.state.join("smc-ueids");
    let pod_record = node.state.join("smc/sandbox9-eth0.json");
    fs::create_dir_all(pod_record.parent().unwrap()).unwrap();
    fs::write(&pod_record, b"{}").unwrap();

    // A record that cannot be removed must fail the uninstall, not be forgotten.
    fs::create_dir_all(ueids.join("MESHACCEL-TEST/stuck")).unwrap();
    let out = node.run(node.command("uninstall"));
    assert!(!out.status.success(), "a failed UEID removal must fail the uninstall");
    assert!(String::from_utf8_lossy(&out.stderr).contains("UEID"), "{}", String::from_utf8_lossy(&out.stderr));

    fs::remove_dir_all(ueids.join("MESHACCEL-TEST")).unwrap();
    fs::write(ueids.join("MESHACCEL-TEST"), b"").unwrap();
    let out = node.run(node.command("uninstall"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!ueids.join("MESHACCEL-TEST").exists(), "the UEID meshaccel added is gone");
    assert!(pod_record.exists(), "per-pod SMC record kept for the pod's DEL");
}
