//! Slots of the `NODE` array, written by the loader.

/// A random non-zero token naming this load on this node (SYN tags carry it).
pub const TOKEN: u32 = 0;
/// 1 when the fexit accounting of consumed bytes is attached, so backlogs are known.
pub const ACCOUNTING: u32 = 1;
/// Byte offsets in the running kernel's structures (from its BTF; aya's programs have
/// no CO-RE relocations), to read whether a socket's file is `O_NONBLOCK`:
/// `struct sock.sk_socket`, `struct socket.file`, `struct file.f_flags`.
pub const SK_SOCKET: u32 = 2;
pub const SOCKET_FILE: u32 = 3;
pub const FILE_FLAGS: u32 = 4;
/// 1 once the three offsets are written. Without them every end counts as blocking.
pub const LAYOUT_KNOWN: u32 = 5;
pub const LEN: u32 = 6;
