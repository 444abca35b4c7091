//! The installer killed (SIGKILL) while it loads the programs and while it adopts a running
//! pod — an OOM kill, a node agent restart: its next start (what the DaemonSet's restart
//! does) converges to what one clean start leaves: the programs loaded whole, the pod
//! attached with its record, its new connections redirected.
use anyhow::Result;
use meshaccel_node::pins::AttachmentId;
use meshaccel_node::{bpf, fault, sockmap};
use meshaccel_tests::containerd::{Containerd, CriPod};

fn attachment(pod: &CriPod) -> AttachmentId {
    AttachmentId::new(&pod.sandbox_id, "eth0").unwrap()
}

#[test]
fn an_installer_killed_while_loading_or_adopting_converges_at_its_next_start() -> Result<()> {
    let node = Containerd::start()?;
    node.write_primary_conflist()?;
    node.wait_for_cni_config("bridge")?;
    let early = node.run_pod("early", &[])?;

    // Killed half way through loading: maps pinned, no programs.
    node.installer_killed_at(fault::LOAD_MAPS_PINNED)?;
    assert!(!bpf::is_loaded(node.pins()), "a load killed half way must not look complete");
    // Killed adopting: the running pod attached, its record not written.
    node.installer_killed_at(fault::ADD_ATTACHED)?;
    assert!(bpf::is_loaded(node.pins()));
    let id = attachment(&early);
    assert!(sockmap::records(&node.state_dir()).load(&id)?.is_none(), "killed before the record");

    let installer = node.start_installer()?;
    node.wait_for_cni_config("meshaccel")?;
    let adoptions = installer.adoptions();
    assert!(adoptions.get(&early.sandbox_id).is_some_and(|o| o.starts_with("Adopted")), "{adoptions:?}");
    let link = bpf::pod_link(node.pins(), &id)?.expect("adopted pod has no link");
    assert_eq!(link.cgroup_id, bpf::cgroup_id(&early.cgroup)?);
    assert_eq!(link.prog_id, bpf::sockops_prog_id(node.pins())?);
    assert!(sockmap::records(&node.state_dir()).load(&id)?.is_some(), "adopted pod has no record");
    assert_eq!(bpf::list_pods(node.pins())?, vec![id], "one pod, one attachment");

    installer.stop()?;
    node.stop_pod(&early)?;
    node.uninstall()?;
    Ok(())
}
