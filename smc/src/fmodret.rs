//! TCP→SMC on upstream kernels (≥ 6.11, `IPPROTO_SMC`): a BPF `fmod_ret` program on
//! `update_socket_protocol` that answers `IPPROTO_SMC` for `socket(AF_INET|AF_INET6,
//! SOCK_STREAM, 0|IPPROTO_TCP)` when the calling task's netns cookie is in a pinned hash
//! map. ADD puts the pod's netns cookie in the map, DEL takes it out. The reserved key
//! [`SUSPEND_KEY`] in the same map suspends the conversion of every selected netns at once
//! (one map update, atomic for the whole node): [`crate::gate`] sets it while the node's RDMA
//! path is not verified.
//!
//! Why a hand-written loader: aya 0.14 (up to 0.16) has no BPF_MODIFY_RETURN program type
//! (its ELF parser lists `fmod_ret` as unsupported and no program type can be loaded
//! with that expected attach type), and libbpf would mean C and a build-time toolchain
//! for one program. The program is 40 instructions; it is assembled here with the kernel
//! offsets it needs taken from the running kernel's BTF (no CO-RE needed) and loaded,
//! attached and pinned with four bpf(2) commands.
//!
//! Pins (`<bpffsRoot>/smc/`): `netns` (the map), `prog`, and `link` (pinned last: its
//! presence marks a complete load; unpinning it detaches the program).
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};

use meshaccel_node::files;
use meshaccel_node::sys::{bpf as sys_bpf_raw, bpf_fd as sys_bpf};

use meshaccel_node::btf::KernelBtf;

pub const TARGET: &str = "update_socket_protocol";
/// IPPROTO_SMC (include/uapi/linux/in.h, Linux ≥ 6.11).
pub const IPPROTO_SMC: i32 = 256;
/// Pods (netns) one node can have converted at once (plus the suspend key).
const MAX_NETNS: u32 = 16_384;
/// While this key is in the map, no netns is converted. No netns has cookie 0: the kernel
/// numbers them from 1.
pub const SUSPEND_KEY: u64 = 0;
/// The program's name. Versions before the suspend key named it `meshaccel_smc`; a pinned
/// program of another name is replaced ([`ensure_loaded`]).
const PROG_NAME: &str = "meshaccel_smc2";

/// `<bpffsRoot>/smc/…`
#[derive(Clone, Debug)]
pub struct SmcPins {
    dir: PathBuf,
}

impl SmcPins {
    pub fn new(bpffs_root: &Path) -> Self {
        Self { dir: bpffs_root.join("smc") }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn map(&self) -> PathBuf {
        self.dir.join("netns")
    }
    pub fn prog(&self) -> PathBuf {
        self.dir.join("prog")
    }
    pub fn link(&self) -> PathBuf {
        self.dir.join("link")
    }
    pub fn is_loaded(&self) -> bool {
        self.link().exists() && self.map().exists()
    }
}

// --- bpf(2) -----------------------------------------------------------------------------

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_MODIFY_RETURN: u32 = 26;

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_prog_fd: u32,
    _pad: u32,
}

#[repr(C)]
struct ObjPinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

#[repr(C)]
struct RawTpOpenAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

fn name16(s: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    n[..s.len().min(15)].copy_from_slice(&s.as_bytes()[..s.len().min(15)]);
    n
}

fn obj_pin(fd: &OwnedFd, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = ObjPinAttr { pathname: c.as_ptr() as u64, bpf_fd: fd.as_raw_fd() as u32, file_flags: 0 };
    sys_bpf_raw(BPF_OBJ_PIN, &mut attr).map(drop)
}

// --- the program ------------------------------------------------------------------------

/// One eBPF instruction.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | dst, off, imm }
}

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R6: u8 = 6;
const R10: u8 = 10;
const LDX_DW: u8 = 0x79;
const ST_DW: u8 = 0x7a;
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const ADD64_K: u8 = 0x07;
const AND32_K: u8 = 0x54;
const JEQ32_K: u8 = 0x16;
const JNE32_K: u8 = 0x56;
const JEQ64_K: u8 = 0x15;
const JNE64_K: u8 = 0x55;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const LD_IMM64: u8 = 0x18;
const PSEUDO_MAP_FD: u8 = 1;
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_GET_CURRENT_TASK: i32 = 35;
const HELPER_PROBE_READ_KERNEL: i32 = 113;

/// Where the program finds the calling task's netns cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub task_nsproxy: u32,
    pub nsproxy_net_ns: u32,
    pub net_cookie: u32,
}

impl Offsets {
    pub fn from_btf(btf: &KernelBtf) -> Result<Self> {
        Ok(Self {
            task_nsproxy: btf.member_offset("task_struct", "nsproxy")?,
            nsproxy_net_ns: btf.member_offset("nsproxy", "net_ns")?,
            net_cookie: btf.member_offset("net", "net_cookie")?,
        })
    }
}

/// Forward jumps to one label, patched when the label is placed.
struct Asm {
    insns: Vec<Insn>,
    to_out: Vec<usize>,
}

impl Asm {
    fn op(&mut self, i: Insn) -> &mut Self {
        self.insns.push(i);
        self
    }
    /// A conditional jump to `out` (patched by [`Asm::out`]).
    fn jump_out(&mut self, code: u8, reg: u8, imm: i32) -> &mut Self {
        self.to_out.push(self.insns.len());
        self.op(insn(code, reg, 0, 0, imm))
    }
    /// `*(u64 *)(fp - 8) = *(u64 *)(r3 + off)` through bpf_probe_read_kernel; leaves to
    /// `out` when the read fails.
    fn read_kernel_u64(&mut self, off: u32) -> &mut Self {
        self.op(insn(ADD64_K, R3, 0, 0, off as i32))
            .op(insn(MOV64_X, R1, R10, 0, 0))
            .op(insn(ADD64_K, R1, 0, 0, -8))
            .op(insn(MOV64_K, R2, 0, 0, 8))
            .op(insn(CALL, 0, 0, 0, HELPER_PROBE_READ_KERNEL))
            .jump_out(JNE64_K, R0, 0)
    }
    /// `r0 = bpf_map_lookup_elem(map, fp - 8)`.
    fn lookup_fp8(&mut self, map_fd: i32) -> &mut Self {
        self.op(insn(LD_IMM64, R1, PSEUDO_MAP_FD, 0, map_fd))
            .op(insn(0, 0, 0, 0, 0))
            .op(insn(MOV64_X, R2, R10, 0, 0))
            .op(insn(ADD64_K, R2, 0, 0, -8))
            .op(insn(CALL, 0, 0, 0, HELPER_MAP_LOOKUP_ELEM))
    }
    fn out(&mut self) -> &mut Self {
        let here = self.insns.len();
        for &at in &self.to_out {
            self.insns[at].off = (here - at - 1) as i16;
        }
        self
    }
}

/// The program. Context: the target's arguments as u64 slots (family, type, protocol).
/// Returns IPPROTO_SMC to replace the protocol, 0 to leave the call alone.
pub fn program(map_fd: i32, o: Offsets) -> Vec<Insn> {
    let mut a = Asm { insns: Vec::new(), to_out: Vec::new() };
    a.op(insn(MOV64_X, R6, R1, 0, 0))
        // family: AF_INET (2) or AF_INET6 (10)
        .op(insn(LDX_DW, R2, R6, 0, 0))
        .op(insn(JEQ32_K, R2, 0, 1, libc::AF_INET))
        .jump_out(JNE32_K, R2, libc::AF_INET6)
        // type (already without SOCK_NONBLOCK/CLOEXEC): SOCK_STREAM
        .op(insn(LDX_DW, R2, R6, 8, 0))
        .op(insn(AND32_K, R2, 0, 0, 0xf))
        .jump_out(JNE32_K, R2, libc::SOCK_STREAM)
        // protocol: 0 or IPPROTO_TCP
        .op(insn(LDX_DW, R2, R6, 16, 0))
        .op(insn(JEQ32_K, R2, 0, 1, 0))
        .jump_out(JNE32_K, R2, libc::IPPROTO_TCP)
        // current->nsproxy->net_ns->net_cookie, into fp-8
        .op(insn(CALL, 0, 0, 0, HELPER_GET_CURRENT_TASK))
        .op(insn(MOV64_X, R3, R0, 0, 0))
        .read_kernel_u64(o.task_nsproxy)
        .op(insn(LDX_DW, R3, R10, -8, 0))
        .jump_out(JEQ64_K, R3, 0) // exiting task: no nsproxy
        .read_kernel_u64(o.nsproxy_net_ns)
        .op(insn(LDX_DW, R3, R10, -8, 0))
        .jump_out(JEQ64_K, R3, 0)
        .read_kernel_u64(o.net_cookie)
        // selected netns?
        .lookup_fp8(map_fd)
        .jump_out(JEQ64_K, R0, 0)
        // suspended node? (only selected netns pay this second lookup)
        .op(insn(ST_DW, R10, 0, -8, SUSPEND_KEY as i32))
        .lookup_fp8(map_fd)
        .jump_out(JNE64_K, R0, 0)
        .op(insn(MOV64_K, R0, 0, 0, IPPROTO_SMC))
        .op(insn(EXIT, 0, 0, 0, 0))
        .out()
        .op(insn(MOV64_K, R0, 0, 0, 0))
        .op(insn(EXIT, 0, 0, 0, 0));
    a.insns
}

// --- load / attach / pin ----------------------------------------------------------------

/// Whether the running kernel has the hook (and BTF to attach to it).
pub fn kernel_supports() -> Result<()> {
    KernelBtf::running()?.func_id(TARGET).map(drop)
}

fn create_map() -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_HASH,
        key_size: 8,
        value_size: 1,
        max_entries: MAX_NETNS,
        map_name: name16("meshaccel_smcns"),
        ..Default::default()
    };
    sys_bpf(BPF_MAP_CREATE, &mut attr)
}

fn load_prog(insns: &[Insn], btf_id: u32) -> Result<OwnedFd> {
    let license = c"GPL"; // bpf_probe_read_kernel is GPL-only
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_TRACING,
        expected_attach_type: BPF_MODIFY_RETURN,
        attach_btf_id: btf_id,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name16(PROG_NAME),
        ..Default::default()
    };
    sys_bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(0);
        let tail: String = String::from_utf8_lossy(&log[end.saturating_sub(1500)..end]).into();
        anyhow::anyhow!("load fmod_ret program: {e}; verifier log tail:\n{tail}")
    })
}

fn attach(prog: &OwnedFd) -> io::Result<OwnedFd> {
    // For tracing programs RAW_TRACEPOINT_OPEN without a name attaches to the BTF target
    // given at load time and returns a bpf_link (Linux ≥ 5.5; BPF_LINK_CREATE took
    // tracing programs only later).
    let mut attr = RawTpOpenAttr { name: 0, prog_fd: prog.as_raw_fd() as u32, _pad: 0 };
    sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)
}

/// Loads, attaches and pins the program unless this version's is already pinned. A pinned
/// program of an older version is replaced over the same map (the selected netns stay).
/// Returns true when this call loaded a program.
pub fn ensure_loaded(pins: &SmcPins) -> Result<bool> {
    if pins.is_loaded() && is_current(pins) {
        return Ok(false);
    }
    fs::create_dir_all(pins.dir()).with_context(|| format!("create {}", pins.dir().display()))?;
    // An exclusive lock on the pin directory while loading or unloading.
    let _lock = files::lock_exclusive(pins.dir()).with_context(|| format!("lock {}", pins.dir().display()))?;
    if pins.is_loaded() {
        if is_current(pins) {
            return Ok(false);
        }
        replace_program(pins)?;
        return Ok(true);
    }
    remove_pins(pins)?;
    load_and_pin(pins).inspect_err(|_| {
        let _ = remove_pins(pins);
    })?;
    Ok(true)
}

/// Whether the pinned program is this version's (it honours [`SUSPEND_KEY`]).
pub fn is_current(pins: &SmcPins) -> bool {
    aya::programs::ProgramInfo::from_pin(pins.prog()).is_ok_and(|i| i.name_as_str() == Some(PROG_NAME))
}

/// This version's program over the map `map_fd`, loaded and attached.
fn load_attached(map_fd: i32) -> Result<(OwnedFd, OwnedFd)> {
    let btf = KernelBtf::running()?;
    let btf_id = btf.func_id(TARGET)?;
    let prog = load_prog(&program(map_fd, Offsets::from_btf(&btf)?), btf_id)?;
    let link = attach(&prog).with_context(|| format!("attach fmod_ret to {TARGET}"))?;
    Ok((prog, link))
}

fn load_and_pin(pins: &SmcPins) -> Result<()> {
    let map = create_map().context("create netns map")?;
    let (prog, link) = load_attached(map.as_raw_fd())?;
    obj_pin(&map, &pins.map()).context("pin map")?;
    obj_pin(&prog, &pins.prog()).context("pin program")?;
    obj_pin(&link, &pins.link()).context("pin link")?; // last: marks completion
    Ok(())
}

/// The upgrade: the new program is attached before the old link's pin is renamed over (its
/// last reference, so it detaches then). For that instant both run; both answer the same
/// for a selected netns unless suspended, so no socket() misses its conversion.
fn replace_program(pins: &SmcPins) -> Result<()> {
    let map = MapData::from_pin(pins.map()).with_context(|| format!("open {}", pins.map().display()))?;
    let (prog, link) = load_attached(map.fd().as_fd().as_raw_fd())?;
    for (fd, pin) in [(&prog, pins.prog()), (&link, pins.link())] {
        // bpffs refuses names with a dot.
        let tmp = pin.with_file_name(format!("{}_new", pin.file_name().unwrap_or_default().to_string_lossy()));
        files::remove_if_exists(&tmp).with_context(|| format!("remove {}", tmp.display()))?;
        obj_pin(fd, &tmp).with_context(|| format!("pin {}", tmp.display()))?;
        fs::rename(&tmp, &pin).with_context(|| format!("rename {} over {}", tmp.display(), pin.display()))?;
    }
    Ok(())
}

fn remove_pins(pins: &SmcPins) -> Result<()> {
    for p in [pins.link(), pins.prog(), pins.map()] {
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("unpin {}", p.display()))
            }
            _ => {}
        }
    }
    Ok(())
}

fn netns_map(pins: &SmcPins) -> Result<BpfHashMap<MapData, u64, u8>> {
    let data = MapData::from_pin(pins.map()).with_context(|| format!("open {}", pins.map().display()))?;
    Ok(BpfHashMap::try_from(Map::HashMap(data))?)
}

/// Converts the sockets of the netns with this cookie from now on.
pub fn select(pins: &SmcPins, cookie: u64) -> Result<()> {
    netns_map(pins)?.insert(cookie, 1, 0).context("add netns to the SMC map")
}

/// Stops converting; absent is fine. Returns whether it was selected.
pub fn deselect(pins: &SmcPins, cookie: u64) -> Result<bool> {
    if !pins.map().exists() {
        return Ok(false);
    }
    match netns_map(pins)?.remove(&cookie) {
        Ok(()) => Ok(true),
        Err(aya::maps::MapError::KeyNotFound) => Ok(false),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e).context("remove netns from the SMC map"),
    }
}

pub fn is_selected(pins: &SmcPins, cookie: u64) -> Result<bool> {
    Ok(pins.map().exists() && netns_map(pins)?.get(&cookie, 0).is_ok())
}

/// Suspends (or resumes) the conversion of every selected netns: one map update.
pub fn set_suspended(pins: &SmcPins, suspended: bool) -> Result<()> {
    if suspended {
        netns_map(pins)?.insert(SUSPEND_KEY, 1, 0).context("suspend the TCP→SMC conversion")
    } else {
        deselect(pins, SUSPEND_KEY).map(drop).context("resume the TCP→SMC conversion")
    }
}

pub fn is_suspended(pins: &SmcPins) -> Result<bool> {
    is_selected(pins, SUSPEND_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sched::{unshare, CloneFlags};
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};

    /// A bpffs directory of this test only, removed on drop even after a panic.
    struct TempPins(SmcPins, PathBuf);

    impl TempPins {
        fn new(tag: &str) -> Self {
            let root = PathBuf::from(format!("/sys/fs/bpf/meshaccel-test-smc-{tag}-{}", std::process::id()));
            Self(SmcPins::new(&root), root)
        }
    }

    impl Drop for TempPins {
        fn drop(&mut self) {
            // The node-wide uninstall path: everything under the root goes, smc/ included.
            let _ = meshaccel_node::bpf::unload_all(&meshaccel_node::pins::Pins::new(&self.1));
        }
    }

    fn tcp_socket(proto: Option<SockProtocol>) -> nix::Result<OwnedFd> {
        socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, proto)
    }

    #[test]
    fn program_jumps_land_inside_and_load_map_is_two_slots() {
        let o = Offsets { task_nsproxy: 8, nsproxy_net_ns: 16, net_cookie: 24 };
        let p = program(42, o);
        for (i, ins) in p.iter().enumerate() {
            if matches!(ins.code, JEQ32_K | JNE32_K | JEQ64_K | JNE64_K) {
                let target = i as i64 + 1 + ins.off as i64;
                assert!(target > i as i64 && (target as usize) < p.len(), "jump at {i} to {target}");
            }
        }
        let ld = p.iter().position(|i| i.code == LD_IMM64).unwrap();
        assert_eq!((p[ld].imm, p[ld].regs >> 4, p[ld + 1]), (42, PSEUDO_MAP_FD, insn(0, 0, 0, 0, 0)));
        assert_eq!(p.last().unwrap().code, EXIT);
        // Loads read family, type, protocol (ctx slots 0, 8, 16) and the stack; imm unused.
        let loads: Vec<(u8, i16)> = p.iter().filter(|i| i.code == LDX_DW).map(|i| (i.regs >> 4, i.off)).collect();
        assert_eq!(&loads[..3], &[(R6, 0), (R6, 8), (R6, 16)]);
        assert!(p.iter().filter(|i| i.code == LDX_DW).all(|i| i.imm == 0));
        // The second lookup is the suspend key's, written to the stack slot the first used.
        let lds: Vec<usize> = p.iter().enumerate().filter(|(_, i)| i.code == LD_IMM64).map(|(n, _)| n).collect();
        assert_eq!(lds.len(), 2);
        assert_eq!(p[lds[1] - 1], insn(ST_DW, R10, 0, -8, SUSPEND_KEY as i32));
    }

    /// On a kernel without SMC a converted socket() fails with EPROTONOSUPPORT (protocol
    /// 256 does not exist): that proves the program ran and chose the selected netns only.
    #[test]
    fn converts_only_selected_netns_and_unload_restores_tcp() {
        if kernel_supports().is_err() {
            eprintln!("skipped: kernel has no {TARGET} in BTF");
            return;
        }
        let pins = TempPins::new("conv");
        match ensure_loaded(&pins.0) {
            Ok(loaded) => assert!(loaded),
            // Kernels that refuse tracing programs (lockdown, sandboxed guests such as the
            // development VMs): the failed load must leave no pin behind.
            Err(e) if format!("{e:#}").contains("Operation not permitted") => {
                assert!(!pins.0.map().exists() && !pins.0.prog().exists() && !pins.0.link().exists());
                eprintln!("kernel refuses tracing programs; checked the rollback only: {e:#}");
                return;
            }
            Err(e) => panic!("{e:#}"),
        }
        assert!(!ensure_loaded(&pins.0).unwrap(), "second load must reuse the pins");
        let p = pins.0.clone();
        std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET).unwrap();
            let cookie = super::super::netns::current_cookie().unwrap();
            assert!(tcp_socket(None).is_ok());
            select(&p, cookie).unwrap();
            assert!(is_selected(&p, cookie).unwrap());
            let smc_kernel = Path::new("/proc/sys/net/smc").exists();
            let converted = || {
                for proto in [None, Some(SockProtocol::Tcp)] {
                    match tcp_socket(proto) {
                        Err(e) => assert_eq!(e, nix::errno::Errno::EPROTONOSUPPORT, "{proto:?}"),
                        Ok(_) => assert!(smc_kernel, "{proto:?}: socket() was not converted"),
                    }
                }
            };
            converted();
            set_suspended(&p, true).unwrap();
            assert!(is_suspended(&p).unwrap() && is_selected(&p, cookie).unwrap());
            assert!(tcp_socket(None).is_ok(), "a suspended node must give TCP");
            set_suspended(&p, false).unwrap();
            assert!(!is_suspended(&p).unwrap());
            converted();
            // UDP and IPPROTO_MPTCP-style explicit protocols are left alone.
            assert!(socket(AddressFamily::Inet, SockType::Datagram, SockFlag::empty(), None).is_ok());
            assert!(deselect(&p, cookie).unwrap());
            assert!(!deselect(&p, cookie).unwrap());
            assert!(tcp_socket(None).is_ok(), "deselected netns must get TCP again");
        })
        .join()
        .unwrap();
        // This (unselected) netns was never converted.
        assert!(tcp_socket(None).is_ok());
        meshaccel_node::bpf::unload_all(&meshaccel_node::pins::Pins::new(&pins.1)).unwrap();
        assert!(!pins.0.dir().exists(), "uninstall removes the SMC pins");
    }
}
