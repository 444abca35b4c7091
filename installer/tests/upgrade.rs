//! Upgrading the pinned programs in place: an "older version" is a minimal sock_ops program
//! (raw bytecode using the same POD_CONFIG map) pinned where ours goes, with a pod attached
//! to it. `ensure_current` must move that pod's link to the real program without
//! recreating the link, its cgroup storage or the sockhash.
mod support;

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use aya::maps::{MapData, MapInfo};
use meshaccel_common::{names, ConnKey, PodConfig};
use meshaccel_node::bpf::{self, Loaded};
use meshaccel_node::pins::{AttachmentId, Pins};
use support::{unique, Cgroup};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_SOCK_OPS: u32 = 13;
const BPF_PROG_TYPE_SK_MSG: u32 = 16;
const BPF_SK_MSG_VERDICT: u32 = 7;
const BPF_MAP_TYPE_SOCKHASH: u32 = 18;
const BPF_FUNC_GET_LOCAL_STORAGE: i32 = 81;

use meshaccel_node::sys::{bpf as sys_bpf, bpf_fd as sys_bpf_fd};

/// `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8, // dst in the low nibble, src in the high one
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, imm: i32) -> Insn {
    Insn { code, regs: dst | (src << 4), off: 0, imm }
}

/// `r1 = POD_CONFIG; r2 = 0; call get_local_storage; r0 = 1; exit`: a sock_ops program
/// that differs from ours but uses the same cgroup storage map.
fn load_old_sockops(pins: &Pins) -> OwnedFd {
    let map = MapData::from_pin(pins.map(names::MAP_POD_CONFIG)).unwrap();
    let map = map.fd().as_fd().as_raw_fd();
    load(
        BPF_PROG_TYPE_SOCK_OPS,
        &[
            insn(0x18, 1, 1, map), // ld_imm64 r1, map fd (BPF_PSEUDO_MAP_FD)
            insn(0, 0, 0, 0),
            insn(0xb7, 2, 0, 0), // mov r2, 0
            insn(0x85, 0, 0, BPF_FUNC_GET_LOCAL_STORAGE),
            insn(0xb7, 0, 0, 1), // mov r0, 1
            insn(0x95, 0, 0, 0), // exit
        ],
    )
}

/// `r0 = SK_PASS; exit`: an sk_msg program that differs from ours.
fn load_old_skmsg() -> OwnedFd {
    load(BPF_PROG_TYPE_SK_MSG, &[insn(0xb7, 0, 0, 1), insn(0x95, 0, 0, 0)])
}

fn load(prog_type: u32, prog: &[Insn]) -> OwnedFd {
    let license = c"GPL";
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
    }
    let mut attr = ProgLoad {
        prog_type,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
    };
    sys_bpf_fd(BPF_PROG_LOAD, &mut attr).expect("load a stand-in old program")
}

/// `BPF_PROG_ATTACH` of an sk_msg program to the pinned SOCKS.
fn attach_skmsg(pins: &Pins, prog: &OwnedFd) {
    let map = MapData::from_pin(pins.map(names::MAP_SOCKS)).unwrap();
    #[repr(C)]
    struct Attach {
        target_fd: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
    }
    let mut attr = Attach {
        target_fd: map.fd().as_fd().as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_SK_MSG_VERDICT,
    };
    sys_bpf(BPF_PROG_ATTACH, &mut attr).unwrap();
}

/// The ids of the sk_msg programs attached to the pinned SOCKS (`BPF_PROG_QUERY`).
fn skmsg_attached(pins: &Pins) -> Vec<u32> {
    let map = MapData::from_pin(pins.map(names::MAP_SOCKS)).unwrap();
    let mut ids = [0u32; 4];
    #[repr(C)]
    struct Query {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: u32,
    }
    let mut attr = Query {
        target_fd: map.fd().as_fd().as_raw_fd() as u32,
        attach_type: BPF_SK_MSG_VERDICT,
        query_flags: 0,
        attach_flags: 0,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        _pad: 0,
    };
    sys_bpf(BPF_PROG_QUERY, &mut attr).unwrap();
    ids[..attr.prog_cnt as usize].to_vec()
}

fn prog_id(pin: &Path) -> u32 {
    aya::programs::ProgramInfo::from_pin(pin).unwrap().id()
}

fn pin(fd: &OwnedFd, path: &Path) {
    meshaccel_node::sys::obj_pin(fd.as_fd(), path).unwrap();
}

struct Root(Pins);
impl Drop for Root {
    fn drop(&mut self) {
        let _ = bpf::unload_all(&self.0);
    }
}

fn enabled() -> PodConfig {
    PodConfig::enabled()
}

#[test]
fn swaps_programs_in_place_keeping_links_storage_and_sockhash() {
    let root = Root(Pins::new(Path::new("/sys/fs/bpf").join(unique("upgrade"))));
    let pins = &root.0;
    assert_eq!(bpf::ensure_current(pins).unwrap(), Loaded::Fresh);
    assert_eq!(bpf::ensure_current(pins).unwrap(), Loaded::Current, "a restart of the same version changes nothing");
    let ours = bpf::sockops_prog_id(pins).unwrap();

    assert_eq!(skmsg_attached(pins), vec![prog_id(&pins.skmsg())]);
    // The "old version" takes both program pins, its sk_msg is the one on SOCKS, and a
    // pod is attached to its sock_ops.
    fs::remove_file(pins.sockops()).unwrap();
    pin(&load_old_sockops(pins), &pins.sockops());
    let old_skmsg = load_old_skmsg();
    attach_skmsg(pins, &old_skmsg);
    fs::remove_file(pins.skmsg()).unwrap();
    pin(&old_skmsg, &pins.skmsg());
    let old_skmsg_id = prog_id(&pins.skmsg());
    assert_eq!(skmsg_attached(pins), vec![old_skmsg_id], "attaching replaced ours");
    let old = bpf::sockops_prog_id(pins).unwrap();
    assert_ne!(old, ours);
    let cg = Cgroup::new("upgrade");
    let id = AttachmentId::new("sandbox-up", "eth0").unwrap();
    let cgid = bpf::attach_pod(pins, &id, &cg.0, enabled()).unwrap();
    let before = bpf::pod_link(pins, &id).unwrap().unwrap();
    assert_eq!(before.prog_id, old);
    let socks = MapInfo::from_pin(pins.map(names::MAP_SOCKS)).unwrap().id();

    assert_eq!(bpf::ensure_current(pins).unwrap(), Loaded::Upgraded { pods: 1 });
    let new = bpf::sockops_prog_id(pins).unwrap();
    assert_ne!(new, old, "the pin now holds this version's program");
    let after = bpf::pod_link(pins, &id).unwrap().unwrap();
    assert_eq!(after.link_id, before.link_id, "same link, updated in place");
    assert_eq!(after.cgroup_id, cgid);
    assert_eq!(after.prog_id, new, "the pod runs the new program");
    assert_eq!(bpf::read_pod_config(pins, cgid).unwrap(), enabled(), "cgroup storage kept");
    assert_eq!(MapInfo::from_pin(pins.map(names::MAP_SOCKS)).unwrap().id(), socks, "same sockhash");
    assert!(bpf::is_loaded(pins));
    assert_ne!(prog_id(&pins.skmsg()), old_skmsg_id);
    assert_eq!(skmsg_attached(pins), vec![prog_id(&pins.skmsg())], "this version's sk_msg on the same sockhash");
    let leftovers: Vec<_> = fs::read_dir(pins.progs_dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(leftovers.iter().all(|n| !n.to_string_lossy().ends_with("_new")), "no temporary pins left: {leftovers:?}");

    assert_eq!(bpf::ensure_current(pins).unwrap(), Loaded::Current);
    assert_eq!(bpf::relink_pods(pins).unwrap(), 0);
}

#[test]
fn a_map_of_another_layout_switches_to_a_fresh_generation() {
    let root = Root(Pins::new(Path::new("/sys/fs/bpf").join(unique("upgrade-bad"))));
    let pins = &root.0;
    bpf::ensure_loaded(pins).unwrap();
    let prog = bpf::sockops_prog_id(pins).unwrap();
    let cg = Cgroup::new("upgrade-bad");
    let id = AttachmentId::new("sandbox-bad", "eth0").unwrap();
    bpf::attach_pod(pins, &id, &cg.0, enabled()).unwrap();
    // An older SOCKS with an 8-byte key, and a map this version does not have.
    let map = meshaccel_node::sys::map_create(BPF_MAP_TYPE_SOCKHASH, 8, 4, 16).unwrap();
    fs::remove_file(pins.map(names::MAP_SOCKS)).unwrap();
    pin(&map, &pins.map(names::MAP_SOCKS));
    pin(&map, &pins.map("RETIRED"));

    match bpf::ensure_current(pins).unwrap() {
        Loaded::Replaced { pods, layout } => {
            assert_eq!(pods, 1, "the pod was detached from the previous generation");
            assert!(layout.contains("SOCKS"), "{layout}");
        }
        other => panic!("{other:?}"),
    }
    assert_ne!(bpf::sockops_prog_id(pins).unwrap(), prog, "a fresh load");
    assert_eq!(MapInfo::from_pin(pins.map(names::MAP_SOCKS)).unwrap().key_size() as usize, size_of::<ConnKey>());
    assert!(!pins.map("RETIRED").exists(), "the previous generation's other maps are unpinned");
    assert_eq!(bpf::pod_link(pins, &id).unwrap(), None, "the pod waits for its new attachment");
    assert_eq!(bpf::ensure_current(pins).unwrap(), Loaded::Current);
}
