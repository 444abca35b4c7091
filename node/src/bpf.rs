//! Loading, pinning and per-pod attaching of meshaccel's BPF programs.
//!
//! State lives in bpffs only (see [`crate::pins`]); every function here can run in a fresh
//! process — the installer, or the CNI plugin when the node has no installer yet.
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use aya::maps::{Array, Map, MapData, PerCpuArray, SockHash};
#[allow(deprecated)]
use aya::maps::{CgroupStorage, CgroupStorageKey};
use aya::programs::links::FdLink;
use aya::programs::{CgroupAttachMode, CgroupSock, CgroupSockAttachType, FExit, ProgramInfo, SkMsg, SockOps};
use aya::Btf;
use aya::EbpfLoader;
use meshaccel_common::{names, node, ConnKey, Counter, PodConfig};
use nix::sys::statfs::{statfs, BPF_FS_MAGIC};

use crate::fault;
use crate::files::{self, remove_if_exists};
use crate::pins::{AttachmentId, Pins};
use crate::sys;

/// The BPF object built from `ebpf/programs` by build.rs. Public for the tests that read it
/// without loading it (installer/tests/object_maps_match_pin_names.rs).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/meshaccel-programs"));

/// `enum bpf_attach_type`: BPF_CGROUP_SOCK_OPS. Part of a cgroup storage key.
const BPF_CGROUP_SOCK_OPS: u32 = 3;

use names::MAPS;

/// Whether `p` is on a bpf filesystem (where pins can live).
pub fn is_bpffs(p: &Path) -> bool {
    statfs(p).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// Whether every pin of a complete load is present.
pub fn is_loaded(pins: &Pins) -> bool {
    pins.required().iter().all(|p| p.exists())
}

/// An exclusive lock on the bpffs root, held while loading or unloading so that concurrent
/// CNI invocations (a node starting many pods at once) load the programs exactly once.
fn lock_root(pins: &Pins) -> Result<impl Sized> {
    files::lock_exclusive(pins.root()).with_context(|| format!("lock {}", pins.root().display()))
}

/// Creates the root directory and checks it is on a bpf filesystem.
/// Checks the nearest existing ancestor first, so nothing is created on a wrong filesystem.
fn prepare_root(pins: &Pins) -> Result<()> {
    let root = pins.root();
    let existing = root.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    if !is_bpffs(existing) {
        bail!("{} is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)", root.display());
    }
    fs::create_dir_all(root).with_context(|| format!("create {}", root.display()))
}

/// Loads and pins the programs and maps unless a complete load is already pinned.
/// Returns true when this call loaded them.
pub fn ensure_loaded(pins: &Pins) -> Result<bool> {
    if is_loaded(pins) {
        return Ok(false);
    }
    prepare_root(pins)?;
    let _lock = lock_root(pins)?;
    if is_loaded(pins) {
        return Ok(false); // another process won the race
    }
    // A crash mid-load can leave some pins; they belong to no running program state
    // that matters (no pod links exist without the sock_ops pin), so start over.
    remove_object_pins(pins)?;
    load_and_pin(pins).inspect_err(|_| {
        let _ = remove_object_pins(pins);
    })?;
    Ok(true)
}

fn load_and_pin(pins: &Pins) -> Result<()> {
    use std::os::fd::AsFd;

    let mut loader = EbpfLoader::new();
    let sizes = fault::max_entries();
    for (map, n) in &sizes {
        loader.map_max_entries(map, *n);
    }
    let mut ebpf = loader.load(OBJECT).context("load BPF object")?;
    fs::create_dir_all(pins.maps_dir())?;
    fs::create_dir_all(pins.progs_dir())?;
    for name in MAPS {
        let map = ebpf.map(name).with_context(|| format!("map {name} missing from object"))?;
        map.pin(pins.map(name)).with_context(|| format!("pin map {name}"))?;
    }
    fault::point(fault::LOAD_MAPS_PINNED);

    let socks = ebpf.take_map(names::MAP_SOCKS).context("map SOCKS")?;
    let socks: SockHash<MapData, ConnKey> = socks.try_into().context("SOCKS is not a sockhash")?;
    let skmsg: &mut SkMsg = program(&mut ebpf, names::PROG_SKMSG)?;
    skmsg.load().context("load sk_msg program")?;
    // Attached to a map with BPF_PROG_ATTACH (aya 0.14 offers no sockmap bpf_link): the
    // attachment lives as long as the map. Not through aya's attach, whose link handle
    // would detach it when dropped and, kept, would hold the map open for as long as this
    // process runs (an idle installer would then keep an uninstalled generation alive).
    sys::attach_sk_msg(socks.fd().as_fd(), skmsg.fd()?.as_fd()).context("attach sk_msg to SOCKS")?;
    skmsg.pin(pins.skmsg()).context("pin sk_msg program")?;

    // Optional: where the kernel refuses tracing programs, backlogs are unbounded (the
    // NODE slot tells the programs, `backpressure_accounting` tells people).
    let accounting = match load_consumed(&mut ebpf) {
        Ok((prog, link)) => {
            fs::create_dir_all(pins.links_dir())?;
            link.pin(pins.consumed_link()).context("pin fexit link")?;
            prog.pin(pins.consumed()).context("pin fexit program")?;
            true
        }
        Err(_) => false,
    };
    write_node(ebpf.map_mut(names::MAP_NODE).context("map NODE")?, accounting)?;

    let sock_create: &mut CgroupSock = program(&mut ebpf, names::PROG_SOCK_CREATE)?;
    sock_create.load().context("load sock_create program")?;
    sock_create.pin(pins.sock_create()).context("pin sock_create program")?;

    let sockops: &mut SockOps = program(&mut ebpf, names::PROG_SOCKOPS)?;
    sockops.load().context("load sock_ops program")?;
    sockops.pin(pins.sockops()).context("pin sock_ops program")?; // last: marks completion
    Ok(())
}

fn load_consumed_prog(ebpf: &mut aya::Ebpf) -> Result<&mut FExit> {
    let btf = Btf::from_sys_fs().context("kernel BTF (/sys/kernel/btf/vmlinux) is needed for fexit")?;
    let prog: &mut FExit = program(ebpf, names::PROG_CONSUMED)?;
    prog.load(names::CONSUMED_HOOK, &btf).with_context(|| format!("load fexit program on {}", names::CONSUMED_HOOK))?;
    Ok(prog)
}

/// Loads and attaches the fexit program that tells how much readers consumed; returns it
/// with its (unpinned) link.
fn load_consumed(ebpf: &mut aya::Ebpf) -> Result<(&mut FExit, FdLink)> {
    let prog = load_consumed_prog(ebpf)?;
    let link = prog.attach().with_context(|| format!("attach fexit to {}", names::CONSUMED_HOOK))?;
    let link: FdLink = prog.take_link(link)?.into();
    Ok((prog, link))
}

/// Why this kernel cannot run the backlog accounting, by loading (not attaching) a fresh
/// copy of the program: for `meshaccel status`/`doctor` when the accounting is off.
pub fn accounting_unavailable_reason() -> Option<String> {
    let mut ebpf = match EbpfLoader::new().load(OBJECT) {
        Ok(e) => e,
        Err(e) => return Some(format!("load BPF object: {e}")),
    };
    load_consumed_prog(&mut ebpf).err().map(|e| format!("{e:#}"))
}

/// Fills the NODE slots: a random non-zero token naming this load of the programs on this
/// node (SYN tags carry it, so a tagged peer on another node, or another meshaccel root,
/// never matches), whether consumption accounting is attached, and the kernel's layout.
fn write_node(map: &mut Map, accounting: bool) -> Result<()> {
    let mut token = 0u32;
    while token == 0 {
        let mut b = [0u8; 4];
        std::io::Read::read_exact(&mut File::open("/dev/urandom")?, &mut b).context("read /dev/urandom")?;
        token = u32::from_ne_bytes(b);
    }
    let mut node: Array<&mut MapData, u32> = map.try_into()?;
    node.set(node::TOKEN, token, 0).context("write node token")?;
    node.set(node::ACCOUNTING, u32::from(accounting), 0).context("write accounting flag")?;
    // Without the layout the programs count every end as blocking: the node runs plain TCP.
    let layout = crate::btf::Layout::of_running_kernel()?;
    for (slot, off) in [
        (node::SK_SOCKET, layout.sk_socket),
        (node::SOCKET_FILE, layout.socket_file),
        (node::FILE_FLAGS, layout.file_flags),
    ] {
        node.set(slot, off, 0).context("write kernel layout")?;
    }
    node.set(node::LAYOUT_KNOWN, 1, 0).context("write kernel layout")
}

/// Whether redirected backlogs are bounded on this node (the fexit accounting is attached).
pub fn backpressure_accounting(pins: &Pins) -> bool {
    pins.consumed_link().exists()
}

fn program<'a, T>(ebpf: &'a mut aya::Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf.program_mut(name).with_context(|| format!("program {name} missing from object"))?;
    p.try_into().with_context(|| format!("program {name} has an unexpected type"))
}

fn remove_dir_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_object_pins(pins: &Pins) -> Result<()> {
    for p in pins.required().into_iter().chain([pins.consumed_link(), pins.consumed()]) {
        remove_if_exists(&p).with_context(|| format!("unpin {}", p.display()))?;
    }
    Ok(())
}

/// The inode number of a cgroup v2 directory, which is the kernel's cgroup id.
pub fn cgroup_id(cgroup: &Path) -> Result<u64> {
    if !crate::cgroup::is_cgroup2(cgroup) {
        bail!("{} is not a cgroup v2 directory", cgroup.display());
    }
    Ok(fs::metadata(cgroup).with_context(|| format!("stat {}", cgroup.display()))?.ino())
}

/// Attaches the pinned sock_ops program to a pod's cgroup with a bpf_link pinned under the
/// attachment's directory, and writes the pod's settings into its cgroup storage. A
/// repeated ADD of the same attachment replaces the old link. Returns the cgroup id.
pub fn attach_pod(pins: &Pins, id: &AttachmentId, cgroup: &Path, cfg: PodConfig) -> Result<u64> {
    let cgroup_id = cgroup_id(cgroup)?;
    let cgroup_dir = File::open(cgroup).with_context(|| format!("open {}", cgroup.display()))?;
    // Owners first: sockets created from here on carry their uid/gid for the rules.
    let mut create = CgroupSock::from_pin(pins.sock_create(), CgroupSockAttachType::SockCreate)
        .context("open pinned sock_create program")?;
    let create_link = create
        .attach(&cgroup_dir, CgroupAttachMode::Single)
        .with_context(|| format!("attach sock_create to {}", cgroup.display()))?;
    let create_link: FdLink = create.take_link(create_link)?.try_into().context("sock_create without a bpf_link")?;
    let mut prog = SockOps::from_pin(pins.sockops()).context("open pinned sock_ops program")?;
    let link_id = prog
        .attach(&cgroup_dir, CgroupAttachMode::Single)
        .with_context(|| format!("attach sock_ops to {}", cgroup.display()))?;
    let link: FdLink = prog
        .take_link(link_id)?
        .try_into()
        .context("kernel attached sock_ops without a bpf_link (needs Linux >= 5.7)")?;
    // The storage slot exists once the program is attached; until written it is zero, which
    // the program reads as "not enabled".
    write_pod_config(pins, cgroup_id, cfg)?;
    fs::create_dir_all(pins.pod_dir(id))?;
    for (i, (pin, link)) in
        [(pins.pod_sock_create_link(id), create_link), (pins.pod_link(id), link)].into_iter().enumerate()
    {
        if i == 1 {
            fault::point(fault::ATTACH_ONE_LINK_PINNED);
        }
        remove_if_exists(&pin)?;
        link.pin(&pin).with_context(|| format!("pin link {}", pin.display()))?;
    }
    Ok(cgroup_id)
}

#[allow(deprecated)] // BPF_MAP_TYPE_CGROUP_STORAGE: the only per-attachment storage sock_ops can read
fn write_pod_config(pins: &Pins, cgroup_id: u64, cfg: PodConfig) -> Result<()> {
    let map = open_map(pins, names::MAP_POD_CONFIG)?;
    let mut storage: CgroupStorage<MapData, PodConfig> = map.try_into()?;
    storage
        .insert(CgroupStorageKey::new(cgroup_id, BPF_CGROUP_SOCK_OPS), cfg, 0)
        .context("write pod config into cgroup storage")
}

#[allow(deprecated)]
pub fn read_pod_config(pins: &Pins, cgroup_id: u64) -> Result<PodConfig> {
    let map = open_map(pins, names::MAP_POD_CONFIG)?;
    let storage: CgroupStorage<MapData, PodConfig> = map.try_into()?;
    Ok(storage.get(CgroupStorageKey::new(cgroup_id, BPF_CGROUP_SOCK_OPS), 0)?)
}

fn open_map(pins: &Pins, name: &str) -> Result<Map> {
    let path = pins.map(name);
    let data = MapData::from_pin(&path).with_context(|| format!("open {}", path.display()))?;
    Ok(Map::from_map_data(data)?)
}

/// Unpins an attachment's link (which detaches it) and removes its directory.
/// Returns whether there was anything to remove; absent state is not an error.
pub fn detach_pod(pins: &Pins, id: &AttachmentId) -> Result<bool> {
    remove_if_exists(&pins.pod_sock_create_link(id))?;
    let existed = remove_if_exists(&pins.pod_link(id))?;
    remove_dir_if_exists(&pins.pod_dir(id))?;
    Ok(existed)
}

/// The kernel's view of an attachment's link: `None` when it is not pinned.
pub fn pod_link(pins: &Pins, id: &AttachmentId) -> Result<Option<sys::CgroupLinkInfo>> {
    Ok(sys::cgroup_link_info(&pins.pod_link(id))?)
}

/// The kernel id of the pinned sock_ops program.
pub fn sockops_prog_id(pins: &Pins) -> Result<u32> {
    Ok(ProgramInfo::from_pin(pins.sockops())?.id())
}

/// Attachments that have a directory under `pods/`.
pub fn list_pods(pins: &Pins) -> Result<Vec<AttachmentId>> {
    let dir = match fs::read_dir(pins.pods_dir()) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e.into()),
    };
    let mut ids = Vec::new();
    for entry in dir {
        if let Some(id) = entry?.file_name().to_str().and_then(AttachmentId::from_dir_name) {
            ids.push(id);
        }
    }
    ids.sort();
    Ok(ids)
}

/// Sums of the per-CPU counters, in [`Counter::ALL`] order.
pub fn read_counters(pins: &Pins) -> Result<Vec<(Counter, u64)>> {
    let map = open_map(pins, names::MAP_COUNTERS)?;
    let counters: PerCpuArray<MapData, u64> = map.try_into()?;
    Counter::ALL.iter().map(|&c| Ok((c, counters.get(&(c as u32), 0)?.iter().sum()))).collect()
}

/// Removes every pin: pod links (detaching them), programs, maps and directories.
pub fn unload_all(pins: &Pins) -> Result<()> {
    if !pins.root().exists() {
        return Ok(());
    }
    let _lock = lock_root(pins)?;
    for id in list_pods(pins)? {
        detach_pod(pins, &id)?;
    }
    remove_object_pins(pins)?;
    for d in [pins.pods_dir(), pins.progs_dir(), pins.maps_dir(), pins.links_dir()] {
        remove_dir_if_exists(&d)?;
    }
    drop(_lock);
    // What other parts pinned under the root (the SMC conversion under `smc/`): unpinning
    // detaches it too, which is what removing everything means.
    match fs::remove_dir_all(pins.root()) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("remove {}", pins.root().display()))
        }
        _ => Ok(()),
    }
}

/// What [`ensure_current`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loaded {
    /// Nothing was pinned: loaded and pinned now.
    Fresh,
    /// The pinned programs are this version's.
    Current,
    /// Pinned programs replaced in place; `pods` links moved to the new sock_ops program.
    Upgraded { pods: usize },
    /// A pinned map had another layout (`layout` says which): the previous generation was
    /// unpinned and `pods` pods detached from it (see [`replace_generation`]); they need
    /// attaching again (the installer's adoption does it).
    Replaced { pods: usize, layout: String },
}

/// Switches to a fresh load when the pinned maps have another layout than this version's:
/// detaches every pod (unpinning its links) and unpins the previous generation's programs
/// and maps, then loads and pins this version's. Nothing is lost by unpinning: the sockets
/// already in the previous sockhash keep their sk_msg program, which holds its maps, so the
/// kernel keeps redirecting them as before until they close, then frees that generation.
/// New connections are plain until their pod is attached again; a connection with one end
/// established on each side of the switch is plain (the new load has another node token,
/// so the ends never pair, and the old end's redirect finds no peer).
/// Called with the root lock held.
fn replace_generation(pins: &Pins) -> Result<usize> {
    let pods = list_pods(pins)?;
    for id in &pods {
        detach_pod(pins, id)?;
    }
    remove_object_pins(pins)?;
    // Maps and programs the previous version had and this one has not.
    for dir in [pins.maps_dir(), pins.progs_dir()] {
        remove_dir_entries(&dir)?;
    }
    load_and_pin(pins).inspect_err(|_| {
        let _ = remove_object_pins(pins);
    })?;
    Ok(pods.len())
}

fn remove_dir_entries(dir: &Path) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("list {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        remove_if_exists(&path).with_context(|| format!("unpin {}", path.display()))?;
    }
    Ok(())
}

/// [`ensure_loaded`], and on an upgrade (pinned programs differ from this version's) swaps
/// the programs in place: the new ones reuse the pinned maps, sk_msg is re-attached to
/// the same sockhash and every pod's bpf_link is updated to the new sock_ops program. No
/// link, map or cgroup storage is recreated, so sockets already in the sockhash keep being
/// redirected and pods never run without a program.
///
/// When a pinned map's layout differs from this version's (the new programs would misread
/// it, and a link update would keep the old cgroup storage), switches generations instead:
/// see [`replace_generation`].
pub fn ensure_current(pins: &Pins) -> Result<Loaded> {
    use std::os::fd::AsFd;

    if !(pins.sockops().exists() && pins.skmsg().exists()) {
        return Ok(if ensure_loaded(pins)? { Loaded::Fresh } else { Loaded::Current });
    }
    let _lock = lock_root(pins)?;
    if let Err(layout) = check_pinned_maps(pins) {
        let pods = replace_generation(pins)?;
        return Ok(Loaded::Replaced { pods, layout: format!("{layout:#}") });
    }
    let mut loader = EbpfLoader::new();
    for name in MAPS {
        // Reuses the pinned map, or creates and pins one this version added.
        loader.map_pin_path(name, pins.map(name));
    }
    let mut ebpf = loader.load(OBJECT).context("load BPF object over the pinned maps")?;
    // The loader holds its parse of the kernel's BTF (~16 MiB for a 5.5 MB vmlinux BTF);
    // freed before the fexit load parses it again, it does not add to the peak RSS.
    drop(loader);
    let mut swapped = false;

    let skmsg: &mut SkMsg = program(&mut ebpf, names::PROG_SKMSG)?;
    skmsg.load().context("load sk_msg program")?;
    if skmsg.info()?.tag() != ProgramInfo::from_pin(pins.skmsg())?.tag() {
        let socks = sys::obj_get(&pins.map(names::MAP_SOCKS)).context("open pinned SOCKS")?;
        sys::attach_sk_msg(socks.as_fd(), skmsg.fd()?.as_fd()).context("attach the new sk_msg to SOCKS")?;
        replace_pin(pins.skmsg().as_path(), |tmp| skmsg.pin(tmp))?;
        swapped = true;
    }

    let pinned_consumed = ProgramInfo::from_pin(pins.consumed()).ok().map(|p| p.tag());
    if let Ok((consumed, link)) = load_consumed(&mut ebpf) {
        if Some(consumed.info()?.tag()) != pinned_consumed {
            // Tracing links cannot be updated in place: the new one is attached first,
            // then replaces the old pin (which detaches the old program).
            fs::create_dir_all(pins.links_dir())?;
            replace_pin(&pins.consumed_link(), |tmp| link.pin(tmp).map(drop))?;
            replace_pin(&pins.consumed(), |tmp| consumed.pin(tmp))?;
            swapped = true;
        }
    }

    let sock_create: &mut CgroupSock = program(&mut ebpf, names::PROG_SOCK_CREATE)?;
    sock_create.load().context("load sock_create program")?;
    let pinned_create = ProgramInfo::from_pin(pins.sock_create()).ok().map(|p| p.tag());
    if Some(sock_create.info()?.tag()) != pinned_create {
        // Pods attached by an older version have no sock_create link; they get one at
        // their next ADD (their sockets then simply have no recorded owner).
        replace_pin(&pins.sock_create(), |tmp| sock_create.pin(tmp))?;
        swapped = true;
    }

    let sockops: &mut SockOps = program(&mut ebpf, names::PROG_SOCKOPS)?;
    sockops.load().context("load sock_ops program")?;
    if sockops.info()?.tag() != ProgramInfo::from_pin(pins.sockops())?.tag() {
        // New ADDs attach the new program from here on; existing links follow below.
        replace_pin(pins.sockops().as_path(), |tmp| sockops.pin(tmp))?;
        swapped = true;
    }
    let pods = relink_pods(pins)?;
    Ok(if swapped || pods > 0 { Loaded::Upgraded { pods } } else { Loaded::Current })
}

/// The temporary name [`replace_pin`] uses (bpffs refuses names with a dot).
fn pin_tmp(pin: &Path) -> std::path::PathBuf {
    let mut name = pin.file_name().unwrap_or_default().to_os_string();
    name.push("_new");
    pin.with_file_name(name)
}

/// Pins under a temporary name, then renames over `pin`, so the path never goes missing.
fn replace_pin(pin: &Path, do_pin: impl FnOnce(&Path) -> Result<(), aya::pin::PinError>) -> Result<()> {
    let tmp = pin_tmp(pin);
    remove_if_exists(&tmp).with_context(|| format!("remove {}", tmp.display()))?;
    do_pin(&tmp).with_context(|| format!("pin {}", tmp.display()))?;
    fs::rename(&tmp, pin).with_context(|| format!("rename {} over {}", tmp.display(), pin.display()))
}

/// Compares each pinned map with this version's definition of it.
fn check_pinned_maps(pins: &Pins) -> Result<()> {
    let obj = aya_obj::Object::parse(OBJECT).context("parse BPF object")?;
    for name in MAPS {
        let path = pins.map(name);
        if !path.exists() {
            continue;
        }
        let def = obj.maps.get(name).with_context(|| format!("map {name} missing from object"))?;
        let info = aya::maps::MapInfo::from_pin(&path).with_context(|| format!("open {}", path.display()))?;
        let pinned =
            (info.map_type()? as u32, info.key_size(), info.value_size(), info.max_entries(), info.map_flags());
        let wanted = (def.map_type(), def.key_size(), def.value_size(), def.max_entries(), def.map_flags());
        if pinned != wanted {
            bail!(
                "pinned map {name} (type, key size, value size, entries, flags) {pinned:?} differs from this version's {wanted:?}"
            );
        }
    }
    Ok(())
}

/// Moves every pod link that runs another program than the pinned sock_ops onto it
/// (BPF_LINK_UPDATE). Returns how many moved.
pub fn relink_pods(pins: &Pins) -> Result<usize> {
    use std::os::fd::AsFd;

    type PodPin = fn(&Pins, &AttachmentId) -> std::path::PathBuf;
    let per_pod: [(std::path::PathBuf, PodPin); 2] =
        [(pins.sockops(), Pins::pod_link), (pins.sock_create(), Pins::pod_sock_create_link)];
    let mut moved = 0;
    let mut failed = Vec::new();
    for (prog_pin, link_of) in per_pod {
        let prog = sys::obj_get(&prog_pin).with_context(|| format!("open {}", prog_pin.display()))?;
        let prog_id = ProgramInfo::from_pin(&prog_pin)?.id();
        for id in list_pods(pins)? {
            let link = link_of(pins, &id);
            match sys::cgroup_link_info(&link) {
                Ok(Some(l)) if l.prog_id != prog_id => match sys::link_update(&link, prog.as_fd()) {
                    Ok(()) => moved += 1,
                    Err(e) => failed.push(format!("{}: {e}", link.display())),
                },
                Ok(_) => {}
                Err(e) => failed.push(format!("{}: {e:#}", link.display())),
            }
        }
    }
    if !failed.is_empty() {
        bail!("could not move pod links to the new programs: {}", failed.join("; "));
    }
    Ok(moved)
}
