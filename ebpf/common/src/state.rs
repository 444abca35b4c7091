//! Per-socket and per-listener state the programs keep between callbacks: `CONN_STATE`,
//! `BACKLOG`, `LISTENERS`.
use crate::ConnKey;

/// Per-socket state, in socket-local storage: written by sock_ops at establishment,
/// read on every send by sk_msg (which cannot see sequence numbers itself).
///
/// Per-socket state (sk_storage). The mode is decided at the connection's first send;
/// after that it can only go from REDIRECT to PLAIN, once: the receiver drains redirected
/// bytes before TCP bytes, so one switch keeps the byte order, a switch back would not.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnState {
    pub mode: u32,
    /// [`ConnState::LOOPBACK`], [`ConnState::INBOX`].
    pub flags: u16,
    /// Sends in a row that could have been batched by TCP (see [`ConnState::batchable`])
    /// since the peer last redirected anything to this socket.
    pub streak: u16,
    /// Where this socket's sends go when redirected.
    pub peer: ConnKey,
    /// The peer's redirected bytes into this socket (its `BACKLOG.sent`) when last seen.
    pub seen_from_peer: u64,
    /// Kernel address of the socket's `struct file` once known (0 before: an accepted
    /// socket has none until `accept()`), read to see whether the end is blocking.
    pub file: u64,
}

impl ConnState {
    pub const UNDECIDED: u32 = 0;
    pub const REDIRECT: u32 = 1;
    pub const PLAIN: u32 = 2;

    /// Both ends on one address: the loopback device, where plain TCP is cheapest.
    pub const LOOPBACK: u16 = 1;
    /// The socket created its peer's `BACKLOG` entry (at its first redirect).
    pub const INBOX: u16 = 4;
    /// The socket was seen in blocking mode at a send, after it was paired.
    pub const BLOCKING: u16 = 8;

    /// Whether a send of `size` bytes is one TCP would do better when streamed: redirect
    /// delivers one message and one wake-up per send, TCP batches a stream of them
    /// (Nagle, autocorking, GRO). Measured (docs/benchmark.md): over veth redirect loses
    /// below 512 B, wins from 1 to 16 KiB (1.6-2.3x) and loses again at 64 KiB (0.88x, where
    /// TCP's 64 KiB GSO/GRO segments cost no more per byte); over loopback it loses at every
    /// size.
    pub const fn batchable(&self, size: u32) -> bool {
        self.flags & Self::LOOPBACK != 0 || size < SMALL_SEND || size >= BULK_SEND
    }
}

/// See [`ConnState::batchable`].
pub const SMALL_SEND: u32 = 512;
/// See [`ConnState::batchable`].
pub const BULK_SEND: u32 = 32 << 10;

/// A REDIRECT socket whose last [`STREAM_RUN`] sends were all batchable, with nothing
/// redirected back by its peer meanwhile, is streaming: it switches to plain TCP for good.
/// Request/response traffic resets the run at every answer, and a send that is not
/// batchable resets it too, so both stay redirected.
pub const STREAM_RUN: u16 = 32;

/// Redirected bytes towards one socket: `sent` is written only by its peer's sk_msg
/// (serialised by the peer's socket lock), `consumed` only when the socket is read. Two
/// single-writer counters need no atomics; a racing second reader can only lose an
/// update of `consumed`, which overstates the backlog (the safe direction). For when
/// the entry exists see [`Backlog::GONE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    pub sent: u64,
    pub consumed: u64,
    /// [`Backlog::PINNED`], set by the receiving socket itself.
    pub flags: u64,
}

impl Backlog {
    /// `sent` of the entry a socket creates for itself when it leaves `SOCKS`. An entry
    /// is created only with BPF_NOEXIST: by the peer at its first redirect into the
    /// socket, or by the socket itself, marked GONE, when it leaves. Whoever comes first
    /// wins: a socket never leaves once something was redirected into it (its sockmap
    /// queue would be dropped unread), and nothing is redirected into a socket that left.
    pub const GONE: u64 = u64::MAX;

    /// The receiving socket was found reading in blocking mode after it was paired. Its
    /// sender never moves to plain TCP towards it (streaming rule, backpressure): plain
    /// bytes arriving at a blocked reader in the sockmap make its read fail with EAGAIN,
    /// redirected ones do not. The receiver may create the entry itself to say so (then
    /// with `sent` 0, never [`Backlog::GONE`]).
    pub const PINNED: u64 = 1;

    pub const fn pinned(&self) -> bool {
        self.flags & Self::PINNED != 0
    }

    pub const fn outstanding(&self) -> i64 {
        self.sent.wrapping_sub(self.consumed) as i64
    }
}

/// A listening socket of an accelerated pod, by where it listens: its local address in
/// the 16-byte form (IPv4 v4-mapped), so an AF_INET listener on `0.0.0.0` is
/// `::ffff:0.0.0.0` and an AF_INET6 one on `[::]` is `::` (both may listen on one port
/// with `IPV6_V6ONLY`). An accepted socket has its listener's family, which says which
/// "any address" key applies to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    pub netns_cookie: u64,
    pub ip: [u32; 4],
    pub port: u32,
    pub _reserved: u32,
}

/// Kernel addresses of a listener's `struct socket` and `struct file`, recorded at
/// `listen()`: at establishment an accepted socket has no file yet, so whether the server
/// reads in blocking mode is judged by its listener's file flags at that moment. The socket
/// address lets a stale entry (listener closed, memory reused) be told apart: its `file`
/// field must still point at `file`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Listener {
    pub socket: u64,
    pub file: u64,
    /// A socket this listener accepted was found reading in blocking mode (at its first
    /// send): the program accepts without `O_NONBLOCK`, so later connections stay plain.
    pub accepted_blocking: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<ConnState>(), 64);
        assert_eq!(core::mem::size_of::<Backlog>(), 24);
        assert_eq!(core::mem::size_of::<ListenerKey>(), 32);
        assert_eq!(core::mem::size_of::<Listener>(), 24);
    }
}
