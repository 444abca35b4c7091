//! Reads of kernel structures the contexts do not expose, at the offsets the loader took
//! from the running kernel's BTF (`NODE` slots): whether a socket's file is blocking.
use core::ffi::c_void;

use aya_ebpf::helpers::generated::{bpf_probe_read_kernel, bpf_skc_to_tcp_sock};
use meshaccel_common::node;

use crate::maps::NODE;

/// `O_NONBLOCK` in `struct file.f_flags` (asm-generic, x86 and arm64 alike).
const O_NONBLOCK: u32 = 0o4000;

fn node_slot(slot: u32) -> u32 {
    NODE.get(slot).copied().unwrap_or(0)
}

/// Reads a `u64` or `u32` of kernel memory at `base + off`. probe_read never faults: a
/// stale address reads as an error or as garbage, which the callers tolerate.
#[inline(always)]
fn kernel_read<T: Copy>(base: u64, off: u32) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    let src = base.wrapping_add(u64::from(off)) as *const c_void;
    // SAFETY: writes at most size_of::<T>() bytes into v; src is only read by the helper.
    let rc = unsafe { bpf_probe_read_kernel(v.as_mut_ptr().cast(), size_of::<T>() as u32, src) };
    // SAFETY: the helper filled v when it returned 0.
    (rc == 0).then(|| unsafe { v.assume_init() })
}

/// The kernel address of a full TCP socket's `struct socket`, 0 when it has none
/// (an accepted socket before `accept()`) or the layout is unknown.
#[inline(always)]
pub(crate) fn socket_of(sk: *mut c_void) -> u64 {
    if sk.is_null() || node_slot(node::LAYOUT_KNOWN) == 0 {
        return 0;
    }
    // SAFETY: sk is a socket pointer from the context; the helper checks its type.
    let tp = unsafe { bpf_skc_to_tcp_sock(sk) };
    if tp.is_null() {
        return 0;
    }
    kernel_read::<u64>(tp as u64, node_slot(node::SK_SOCKET)).unwrap_or(0)
}

/// The `struct file` of a `struct socket` (0 if none).
#[inline(always)]
pub(crate) fn file_of(socket: u64) -> u64 {
    if socket == 0 {
        return 0;
    }
    kernel_read::<u64>(socket, node_slot(node::SOCKET_FILE)).unwrap_or(0)
}

/// Whether reads of this file can block: anything but a readable `O_NONBLOCK` counts
/// as blocking (the safe side: such an end stays plain).
#[inline(always)]
pub(crate) fn blocking(file: u64) -> bool {
    file == 0 || kernel_read::<u32>(file, node_slot(node::FILE_FLAGS)).is_none_or(|f| f & O_NONBLOCK == 0)
}
