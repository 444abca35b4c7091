//! `meshaccel doctor --syn-check ADDR:PORT`: does SMC's TCP option survive the path to a
//! listener and back?
//!
//! SMC peers announce themselves with an experimental TCP option in SYN and SYN-ACK (kind
//! 254, length 6, ExID 0xE2D4C3D9; include/net/tcp.h). A middlebox that strips unknown
//! options turns every connection on that path into plain TCP, silently. This check sends
//! one SYN carrying the option from a raw socket and reads the SYN-ACK from the same
//! socket; the kernel answers that SYN-ACK with a RST because no socket of ours is in
//! SYN_SENT. So the TCP handshake never completes and SMC's CLC handshake, the part that
//! touches RDMA (and can hang a task for ever on a one-way-broken RoCE path), never
//! starts. The source port is held by a bound, unconnected TCP socket meanwhile, so
//! nothing else on this netns can pick it.
use std::fmt::Write as _;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use etherparse::{Ipv4Slice, TcpHeader, TcpHeaderSlice};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    bind, connect, getsockname, recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
    SockaddrStorage,
};
use serde::Serialize;

const TCPOPT_NOP: u8 = 1;
const TCPOPT_MSS: u8 = 2;
/// Experimental option kind, shared by SMC and TCP Fast Open (told apart by their ExID).
pub const TCPOPT_EXP: u8 = 254;
pub const SMC_MAGIC: u32 = 0xE2D4_C3D9;
/// Kind, length and the 4-byte ExID (TCPOLEN_EXP_SMC_BASE).
const SMC_OPTION_LEN: u8 = 6;
/// SYNs sent before giving up, spread over the deadline (one lost SYN is no verdict).
const TRIES: u32 = 3;

/// The options of our SYN: an MSS (a SYN without one looks odd to middleboxes), then the
/// SMC option padded with two NOPs to a 32-bit boundary, as Linux writes it.
fn syn_options(mss: u16) -> [u8; 12] {
    let [m0, m1] = mss.to_be_bytes();
    let [x0, x1, x2, x3] = SMC_MAGIC.to_be_bytes();
    [TCPOPT_MSS, 4, m0, m1, TCPOPT_NOP, TCPOPT_NOP, TCPOPT_EXP, SMC_OPTION_LEN, x0, x1, x2, x3]
}

/// The SYN segment (TCP header only, checksum filled in) from `src` to `dst`.
pub fn build_syn(src: SocketAddr, dst: SocketAddr, seq: u32) -> Result<Vec<u8>> {
    let mut h = TcpHeader::new(src.port(), dst.port(), seq, 64240);
    h.syn = true;
    let mss = if dst.is_ipv4() { 1460 } else { 1440 };
    h.set_options_raw(&syn_options(mss)).map_err(|e| anyhow::anyhow!("SYN options: {e}"))?;
    h.checksum = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => h.calc_checksum_ipv4_raw(s.octets(), d.octets(), &[]),
        (IpAddr::V6(s), IpAddr::V6(d)) => h.calc_checksum_ipv6_raw(s.octets(), d.octets(), &[]),
        _ => bail!("source {src} and target {dst} are of different address families"),
    }?;
    Ok(h.to_bytes().to_vec())
}

/// Whether TCP options carry SMC's (kind 254, even length ≥ 6, ExID first: the kernel's
/// own test in smc_parse_options). Walked by hand: etherparse's option iterator stops at
/// the first kind it does not know, and 254 is one of them.
pub fn has_smc_option(mut opts: &[u8]) -> bool {
    while let Some(&kind) = opts.first() {
        match kind {
            0 => return false, // end of options
            TCPOPT_NOP => opts = &opts[1..],
            _ => {
                let Some(&len) = opts.get(1) else { return false };
                let len = usize::from(len);
                if len < 2 || len > opts.len() {
                    return false; // malformed: the kernel stops there too
                }
                if kind == TCPOPT_EXP
                    && len >= usize::from(SMC_OPTION_LEN)
                    && len % 2 == 0
                    && opts[2..6] == SMC_MAGIC.to_be_bytes()
                {
                    return true;
                }
                opts = &opts[len..];
            }
        }
    }
    false
}

/// What came back for our SYN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    SynAck { options: Vec<u8> },
    Reset,
}

/// Our SYN's answer among the segments a raw socket reads (IPv4 raw sockets deliver the IP
/// header, IPv6 ones do not): from the target's port to ours, acknowledging `seq`.
pub fn parse_reply(packet: &[u8], with_ipv4_header: bool, dst_port: u16, our_port: u16, seq: u32) -> Option<Reply> {
    let tcp = if with_ipv4_header { Ipv4Slice::from_slice(packet).ok()?.payload().payload } else { packet };
    let h = TcpHeaderSlice::from_slice(tcp).ok()?;
    if h.source_port() != dst_port || h.destination_port() != our_port {
        return None;
    }
    let acks_ours = h.ack() && h.acknowledgment_number() == seq.wrapping_add(1);
    if h.rst() && (acks_ours || h.sequence_number() == seq.wrapping_add(1)) {
        Some(Reply::Reset)
    } else if h.syn() && acks_ours {
        Some(Reply::SynAck { options: h.options().to_vec() })
    } else {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Answer {
    SynAck,
    Reset,
    None,
}

/// What `--syn-check` prints.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub target: SocketAddr,
    pub source: SocketAddr,
    pub answer: Answer,
    /// Whether the SYN-ACK carried the SMC option (null without a SYN-ACK).
    pub smc_option: Option<bool>,
    /// The SYN-ACK's TCP options, hex.
    pub reply_options: Option<String>,
    pub syns_sent: u32,
    pub elapsed_ms: u64,
    /// The SMC option came back: SMC can be negotiated with this listener on this path.
    pub ok: bool,
    pub meaning: String,
}

fn meaning(answer: Answer, smc: Option<bool>, timeout: Duration) -> String {
    match (answer, smc) {
        (Answer::SynAck, Some(true)) => "the listener answered with the SMC option: it is SMC-enabled and the option \
             survived the path both ways, so SMC can be negotiated (whether SMC-R then works depends on RDMA \
             between the nodes, which this check does not touch)"
            .into(),
        (Answer::SynAck, _) => "the listener answered without the SMC option: either it is not SMC-enabled (a plain \
             TCP listener answers exactly like this), or it limits SMC handshakes (net.smc.limit_smc_hs), or \
             something on the path stripped the option from the SYN or the SYN-ACK; connections to it fall back \
             to TCP. Check against a listener known to be SMC-enabled to tell these apart"
            .into(),
        (Answer::Reset, _) => "the target answered with a RST: nothing listens there (or a firewall rejects); no \
             conclusion about the path"
            .into(),
        (Answer::None, _) => format!(
            "no answer within {} ms: host down, SYNs filtered, or no route; no conclusion about the SMC option",
            timeout.as_millis()
        ),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// The address this netns would send from to `dst` (a connected UDP socket sends nothing).
fn source_ip(dst: SocketAddr) -> Result<IpAddr> {
    let any: SocketAddr = if dst.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    let udp = UdpSocket::bind(any).context("UDP socket for the route lookup")?;
    udp.connect(dst).with_context(|| format!("no route to {dst}"))?;
    Ok(udp.local_addr()?.ip())
}

/// A TCP socket bound to an ephemeral port of `ip` and never connected: it keeps the port
/// ours while the probe runs, and receives nothing, so the kernel RSTs the SYN-ACK.
fn reserve_port(ip: IpAddr) -> Result<(OwnedFd, u16)> {
    let fd = socket(family(ip), SockType::Stream, SockFlag::SOCK_CLOEXEC, None).context("TCP socket")?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(SocketAddr::new(ip, 0))).context("bind the source port")?;
    let local: SockaddrStorage = getsockname(fd.as_raw_fd())?;
    let port = local
        .as_sockaddr_in()
        .map(|a| a.port())
        .or_else(|| local.as_sockaddr_in6().map(|a| a.port()))
        .context("getsockname: not an IP address")?;
    Ok((fd, port))
}

fn random_seq() -> u32 {
    RandomState::new().hash_one(SystemTime::now()) as u32
}

/// Sends the SYN (again every `timeout / TRIES`) and waits up to `timeout` for its answer.
pub fn probe(target: SocketAddr, timeout: Duration) -> Result<Report> {
    let src_ip = source_ip(target)?;
    let (_port_holder, port) = reserve_port(src_ip)?;
    let source = SocketAddr::new(src_ip, port);
    let raw = socket(family(target.ip()), SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::Tcp)
        .context("raw TCP socket (needs CAP_NET_RAW)")?;
    // Connected: the kernel hands this socket only segments from the target's address.
    connect(raw.as_raw_fd(), &SockaddrStorage::from(SocketAddr::new(target.ip(), 0)))
        .with_context(|| format!("connect the raw socket to {}", target.ip()))?;
    let seq = random_seq();
    let syn = build_syn(source, target, seq)?;
    let start = Instant::now();
    let (mut sent, mut reply) = (0, None);
    let mut buf = vec![0u8; 65536];
    while reply.is_none() && start.elapsed() < timeout {
        if sent < TRIES && start.elapsed() >= timeout / TRIES * sent {
            send(raw.as_raw_fd(), &syn, MsgFlags::empty()).with_context(|| format!("send the SYN to {target}"))?;
            sent += 1;
        }
        let next_send = if sent < TRIES { timeout / TRIES * sent } else { timeout };
        let wait = next_send.min(timeout).saturating_sub(start.elapsed());
        let mut fds = [PollFd::new(raw.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(wait.max(Duration::from_millis(1))).unwrap_or(PollTimeout::MAX);
        if poll(&mut fds, ms).context("poll the raw socket")? == 0 {
            continue;
        }
        let n = match recv(raw.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            r => r.context("read the raw socket")?,
        };
        reply = parse_reply(&buf[..n], target.is_ipv4(), target.port(), port, seq);
    }
    let elapsed_ms = start.elapsed().as_millis() as u64;
    let (answer, options) = match reply {
        Some(Reply::SynAck { options }) => (Answer::SynAck, Some(options)),
        Some(Reply::Reset) => (Answer::Reset, None),
        None => (Answer::None, None),
    };
    let smc_option = options.as_deref().map(has_smc_option);
    Ok(Report {
        target,
        source,
        answer,
        smc_option,
        reply_options: options.as_deref().map(hex),
        syns_sent: sent,
        elapsed_ms,
        ok: smc_option == Some(true),
        meaning: meaning(answer, smc_option, timeout),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpNumber, Ipv4Header};

    fn addrs() -> (SocketAddr, SocketAddr) {
        ("10.0.0.1:40000".parse().unwrap(), "10.0.0.2:7000".parse().unwrap())
    }

    #[test]
    fn syn_carries_the_smc_option_as_linux_writes_it() {
        let (src, dst) = addrs();
        let syn = build_syn(src, dst, 1000).unwrap();
        let h = TcpHeaderSlice::from_slice(&syn).unwrap();
        assert!(h.syn() && !h.ack() && !h.rst());
        assert_eq!((h.source_port(), h.destination_port(), h.sequence_number()), (40000, 7000, 1000));
        // MSS 1460, then NOP NOP 254 6 E2 D4 C3 D9 (smc_options_write in tcp_output.c).
        assert_eq!(h.options(), [2, 4, 0x05, 0xb4, 1, 1, 254, 6, 0xe2, 0xd4, 0xc3, 0xd9]);
        assert!(has_smc_option(h.options()));
    }

    /// RFC 1071 done independently of etherparse: the ones' complement sum over the
    /// pseudo-header and the segment, checksum included, is all ones.
    fn sums_to_ones(src: IpAddr, dst: IpAddr, segment: &[u8]) -> bool {
        let ip = |a: IpAddr| match a {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let len = segment.len() as u32;
        let pseudo = [ip(src), ip(dst), vec![0, 0, 0, 6], len.to_be_bytes().to_vec()].concat();
        let data = [pseudo, segment.to_vec()].concat();
        let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum == 0xffff
    }

    #[test]
    fn syn_checksum_verifies_for_both_families() {
        for (src, dst) in [addrs(), ("[fd00::1]:40000".parse().unwrap(), "[fd00::2]:7000".parse().unwrap())] {
            let syn = build_syn(src, dst, 7).unwrap();
            assert!(sums_to_ones(src.ip(), dst.ip(), &syn), "{src} → {dst}");
            let mut bad = syn.clone();
            bad[4] ^= 1; // another sequence number, same checksum
            assert!(!sums_to_ones(src.ip(), dst.ip(), &bad));
        }
        assert!(build_syn(addrs().0, "[::1]:1".parse().unwrap(), 1).is_err());
    }

    #[test]
    fn smc_option_is_recognised_only_when_well_formed() {
        let smc = [1, 1, 254, 6, 0xe2, 0xd4, 0xc3, 0xd9];
        assert!(has_smc_option(&smc));
        // After the options a Linux SYN-ACK carries (MSS, SACK-permitted, timestamps, wscale).
        let linux = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
        assert!(!has_smc_option(&linux));
        assert!(has_smc_option(&[&linux[..], &smc[..]].concat()));
        // TCP Fast Open's experimental option (ExID 0xF989) is not SMC's.
        assert!(!has_smc_option(&[254, 6, 0xf9, 0x89, 0, 0]));
        // Odd length, truncated, or behind an end-of-options: the kernel ignores it too.
        assert!(!has_smc_option(&[254, 7, 0xe2, 0xd4, 0xc3, 0xd9, 0]));
        assert!(!has_smc_option(&[254, 6, 0xe2, 0xd4]));
        assert!(!has_smc_option(&[0, 0, 254, 6, 0xe2, 0xd4, 0xc3, 0xd9]));
        assert!(!has_smc_option(&[2, 0, 254, 6, 0xe2, 0xd4, 0xc3, 0xd9]));
        assert!(!has_smc_option(&[]));
    }

    /// A segment from the target to us, as an IPv4 raw socket reads it.
    fn segment(f: impl FnOnce(&mut TcpHeader), options: &[u8]) -> Vec<u8> {
        let (src, dst) = addrs();
        let mut h = TcpHeader::new(dst.port(), src.port(), 5000, 65535);
        h.set_options_raw(options).unwrap();
        f(&mut h);
        let ip = Ipv4Header::new(h.header_len_u16(), 64, IpNumber::TCP, [10, 0, 0, 2], [10, 0, 0, 1]).unwrap();
        [ip.to_bytes().to_vec(), h.to_bytes().to_vec()].concat()
    }

    #[test]
    fn replies_are_matched_to_our_syn() {
        let smc = [1, 1, 254, 6, 0xe2, 0xd4, 0xc3, 0xd9];
        let synack = segment(
            |h| {
                h.syn = true;
                h.ack = true;
                h.acknowledgment_number = 1001;
            },
            &smc,
        );
        assert_eq!(parse_reply(&synack, true, 7000, 40000, 1000), Some(Reply::SynAck { options: smc.to_vec() }));
        // Without the IPv4 header (IPv6 raw sockets).
        assert!(parse_reply(&synack[20..], false, 7000, 40000, 1000).is_some());
        // Another SYN's answer, or another connection's segment: not ours.
        assert_eq!(parse_reply(&synack, true, 7000, 40000, 999), None);
        assert_eq!(parse_reply(&synack, true, 7001, 40000, 1000), None);
        assert_eq!(parse_reply(&synack, true, 7000, 40001, 1000), None);
        let rst = segment(
            |h| {
                h.rst = true;
                h.ack = true;
                h.acknowledgment_number = 1001;
            },
            &[],
        );
        assert_eq!(parse_reply(&rst, true, 7000, 40000, 1000), Some(Reply::Reset));
        let bare_ack = segment(|h| h.ack = true, &[]);
        assert_eq!(parse_reply(&bare_ack, true, 7000, 40000, 1000), None);
        assert_eq!(parse_reply(&synack[..30], true, 7000, 40000, 1000), None);
    }
}
