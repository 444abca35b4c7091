//! Reading the programs' contexts (`bpf_sock_ops`, `sk_msg_md`, `bpf_sock`).

/// `family` of a context.
pub(crate) const AF_INET: u32 = 2;
pub(crate) const AF_INET6: u32 = 10;

/// Reads a context field at its fixed offset. The verifier only accepts ctx loads at
/// constant offsets; plain reads let LLVM merge two loads into one through a selected
/// pointer ("dereference of modified ctx ptr").
macro_rules! ctx_read {
    ($ops:expr, $($field:tt)+) => {
        // SAFETY: $ops points at the program's context.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*$ops).$($field)+)) }
    };
}
pub(crate) use ctx_read;
