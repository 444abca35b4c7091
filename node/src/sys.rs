//! The two bpf(2) calls aya 0.14 does not expose: opening a pinned link as a plain fd, and
//! reading the cgroup a cgroup link is attached to (`LinkInfo` hides `cgroup.cgroup_id`).
//! CHECK needs that to prove a pod's link points at the pod's cgroup.
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// Prefix of `struct bpf_link_info` up to the `cgroup` member of its union (uapi/linux/bpf.h):
/// the union is 8-byte aligned, so it starts at offset 16.
#[repr(C)]
#[derive(Default, Debug)]
struct BpfLinkInfoCgroup {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    cgroup_id: u64,
    attach_type: u32,
    _pad2: u32,
}

/// What the kernel says a cgroup link is: its program and the cgroup it is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupLinkInfo {
    pub link_id: u32,
    pub prog_id: u32,
    pub cgroup_id: u64,
    pub attach_type: u32,
}

const BPF_LINK_TYPE_CGROUP: u32 = 3;

/// `bpf_attr` for BPF_OBJ_GET.
#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// bpf(2) with `attr`, a `#[repr(C)]` prefix of `union bpf_attr` for `cmd` (the kernel
/// zero-extends shorter ones). For the commands that return a number.
pub fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<i64> {
    // SAFETY: attr is a fully initialised bpf_attr prefix of the size passed.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// [`bpf`] for the commands that return a new fd.
pub fn bpf_fd<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    // SAFETY: the kernel returned a new fd we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_OBJ_GET` on a pin path.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = ObjGetAttr { pathname: c.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
    bpf_fd(BPF_OBJ_GET, &mut attr)
}

/// `BPF_OBJ_PIN`: pins `fd` (a map, program or link) at `path`.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = ObjGetAttr { pathname: c.as_ptr() as u64, bpf_fd: fd.as_raw_fd() as u32, file_flags: 0 };
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

/// `BPF_MAP_CREATE` of a map without BTF: for tests that stand in for another version's maps.
pub fn map_create(map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    }
    bpf_fd(BPF_MAP_CREATE, &mut MapCreate { map_type, key_size, value_size, max_entries })
}

/// Reads a pinned cgroup link. `Ok(None)` when the pin is absent.
pub fn cgroup_link_info(pin: &Path) -> io::Result<Option<CgroupLinkInfo>> {
    let fd = match obj_get(pin) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut info = BpfLinkInfoCgroup::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<BpfLinkInfoCgroup>() as u32,
        info: &mut info as *mut BpfLinkInfoCgroup as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    if info.link_type != BPF_LINK_TYPE_CGROUP {
        return Err(io::Error::other(format!(
            "{} is a bpf link of type {}, not a cgroup link",
            pin.display(),
            info.link_type
        )));
    }
    Ok(Some(CgroupLinkInfo {
        link_id: info.id,
        prog_id: info.prog_id,
        cgroup_id: info.cgroup_id,
        attach_type: info.attach_type,
    }))
}

const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_LINK_UPDATE: libc::c_long = 29;
/// `enum bpf_attach_type`: an sk_msg verdict program on a sockmap/sockhash.
const BPF_SK_MSG_VERDICT: u32 = 7;

/// `bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// `bpf_attr` for BPF_LINK_UPDATE.
#[repr(C)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// Attaches an sk_msg program to a sockhash, replacing the one attached before (sockets
/// already in the map keep the program they were added with).
pub fn attach_sk_msg(map: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = ProgAttachAttr {
        target_fd: map.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_SK_MSG_VERDICT,
        attach_flags: 0,
        replace_bpf_fd: 0,
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map(|_| ())
}

/// Points a pinned bpf_link at another program of the same type, in place: the link (and
/// with it the attachment and its cgroup storage) stays, only the program changes.
pub fn link_update(pin: &Path, prog: BorrowedFd<'_>) -> io::Result<()> {
    let link = obj_get(pin)?;
    let mut attr = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
    };
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}
