//! meshaccel's kernel-side programs. The design, and why each step exists, is in
//! docs/design.md; in short:
//!
//! * `meshaccel_sockops` (sock_ops, attached per pod cgroup) tags the SYN of an enabled pod
//!   with a TCP option carrying this node's token; an enabled listener answers in its
//!   SYN-ACK only when the SYN had it. So at establishment both ends know whether the
//!   other is an accelerated socket on this node, and only such pairs enter `SOCKS`
//!   (a socket in a sockmap that receives plain TCP suffers the kernel's tcp_bpf receive
//!   path, whose blocking reads can fail with EAGAIN).
//! * Both ends name the connection identically (client endpoint + both initial sequence
//!   numbers: this survives REDIRECT/DNAT); each socket's storage holds its peer's key.
//! * The server end, at establishment, and the client end, at its first send, race to
//!   create the connection's `DECISION` entry: PAIRED (server first) means redirect both
//!   ways, PLAIN (client first: it had to send before the server was ready) means plain
//!   TCP both ways, and the server then takes both sockets out of `SOCKS`.
//! * `meshaccel_skmsg` (sk_msg on `SOCKS`) redirects each send of a REDIRECT socket into
//!   its peer's receive queue, counting it in the peer's `BACKLOG`; `meshaccel_consumed`
//!   (fexit on tcp_bpf_recvmsg) counts what the reader took. A sender whose peer is
//!   [`MAX_BACKLOG`] behind switches to plain TCP for good: the reader drains its sockmap
//!   queue before its TCP queue, so order holds, and TCP's window brings backpressure.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

// The programs, one module per hook, each named after its program (less `meshaccel_`).
#[cfg(target_arch = "bpf")]
mod consumed;
#[cfg(target_arch = "bpf")]
mod skmsg;
#[cfg(target_arch = "bpf")]
mod sock_create;
#[cfg(target_arch = "bpf")]
mod sockops;

// Every map, and the helpers more than one program uses.
#[cfg(target_arch = "bpf")]
mod counters;
#[cfg(target_arch = "bpf")]
mod ctx;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod listeners;
#[cfg(target_arch = "bpf")]
mod maps;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
