//! `dns:NAME:PORT` probe peers, resolved when the probe runs: A and AAAA queries to the
//! configured nameservers (else /etc/resolv.conf's), over UDP with EDNS0, again over TCP
//! when the answer was truncated. All under the probe's deadline; any failure (no answer,
//! NXDOMAIN, no address) is an error, so a peer set that cannot be known never counts as
//! verified.
//!
//! Why not the libc resolver: getaddrinfo cannot be pointed at the cluster DNS, has no
//! deadline of ours, and its answer depends on nsswitch and search domains.
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use meshaccel_node::conf::smc::{Nameserver, Peer};

/// What the node's own resolver is configured with.
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// EDNS0 payload we accept over UDP: 64 peers' A records fit; more come over TCP.
const UDP_PAYLOAD: u16 = 4096;

/// The addresses to probe: static peers as they are, `dns:` peers as their names resolve
/// now, without the node's own addresses (a Service over every node lists this one too).
pub fn resolve(
    peers: &[Peer],
    nameservers: &[Nameserver],
    own: &BTreeSet<IpAddr>,
    deadline: Instant,
) -> Result<Vec<SocketAddr>, String> {
    let mut out = BTreeSet::new();
    let mut servers: Option<Vec<SocketAddr>> = None;
    for p in peers {
        match p {
            Peer::Addr(a) => {
                out.insert(*a);
            }
            Peer::Dns { name, port } => {
                let servers = match &mut servers {
                    Some(s) => s,
                    None => servers.insert(if nameservers.is_empty() {
                        system_nameservers()?
                    } else {
                        nameservers.iter().map(|n| n.0).collect()
                    }),
                };
                let ips = lookup(name, servers, deadline).map_err(|e| format!("{p}: {e}"))?;
                let others: Vec<_> = ips.iter().filter(|ip| !own.contains(ip)).collect();
                if others.is_empty() {
                    return Err(format!("{p}: resolves only to this node ({ips:?}): no other node to probe"));
                }
                out.extend(others.into_iter().map(|&ip| SocketAddr::new(ip, *port)));
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// The IP addresses of the calling thread's network namespace.
pub fn own_addresses() -> BTreeSet<IpAddr> {
    let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() else { return BTreeSet::new() };
    ifaddrs
        .filter_map(|i| {
            let a = i.address?;
            a.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())).or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
        })
        .collect()
}

fn system_nameservers() -> Result<Vec<SocketAddr>, String> {
    let text = std::fs::read_to_string(RESOLV_CONF).map_err(|e| format!("read {RESOLV_CONF}: {e}"))?;
    let servers = parse_resolv_conf(&text);
    if servers.is_empty() {
        return Err(format!("{RESOLV_CONF} names no nameserver (set smc.probe.nameservers)"));
    }
    Ok(servers)
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        // An IPv6 link-local server carries a zone (`fe80::1%eth0`); IpAddr does not take one.
        .filter_map(|rest| rest.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// A and AAAA addresses of `name`, from the first server that answers both.
fn lookup(name: &str, servers: &[SocketAddr], deadline: Instant) -> Result<Vec<IpAddr>, String> {
    let fqdn = Name::from_ascii(format!("{name}.")).map_err(|e| format!("bad name: {e}"))?;
    let mut errors = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        // An even share of what is left, so one dead server cannot starve the next.
        let left = deadline.saturating_duration_since(Instant::now());
        let share = Instant::now() + left / (servers.len() - i) as u32;
        let answer = query(*server, &fqdn, RecordType::A, share)
            .and_then(|mut v4| {
                v4.extend(query(*server, &fqdn, RecordType::AAAA, share)?);
                Ok(v4)
            })
            .and_then(|ips| if ips.is_empty() { Err("no A or AAAA record".to_string()) } else { Ok(ips) });
        match answer {
            Ok(ips) => return Ok(ips),
            Err(e) => errors.push(format!("{server}: {e}")),
        }
    }
    Err(errors.join("; "))
}

fn query(server: SocketAddr, name: &Name, rtype: RecordType, deadline: Instant) -> Result<Vec<IpAddr>, String> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(UDP_PAYLOAD);
    msg.set_edns(edns);
    let wire = msg.to_vec().map_err(|e| format!("encode query: {e}"))?;
    let id = msg.metadata.id;
    let mut answer = over_udp(server, &wire, id, deadline).map_err(|e| format!("{rtype} over UDP: {e}"))?;
    if answer.metadata.truncation {
        answer = over_tcp(server, &wire, id, deadline).map_err(|e| format!("{rtype} over TCP: {e}"))?;
    }
    match answer.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Err("no such name (NXDOMAIN)".into()),
        rc => return Err(format!("server answered {rc}")),
    }
    Ok(answer.answers.iter().filter(|r| r.record_type() == rtype).filter_map(|r| r.data.ip_addr()).collect())
}

fn left(deadline: Instant) -> Result<Duration, String> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        Err("timed out".into())
    } else {
        Ok(d)
    }
}

fn io(e: std::io::Error) -> String {
    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
        "timed out".into()
    } else {
        e.to_string()
    }
}

/// One answer matching `id`; stray datagrams (late answers to an earlier try) are skipped.
fn over_udp(server: SocketAddr, wire: &[u8], id: u16, deadline: Instant) -> Result<Message, String> {
    let local: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let sock = UdpSocket::bind(local).map_err(io)?;
    sock.connect(server).map_err(io)?;
    sock.send(wire).map_err(io)?;
    let mut buf = vec![0u8; usize::from(UDP_PAYLOAD)];
    loop {
        sock.set_read_timeout(Some(left(deadline)?)).map_err(io)?;
        let n = sock.recv(&mut buf).map_err(io)?;
        match Message::from_vec(&buf[..n]) {
            Ok(m) if m.metadata.id == id && m.metadata.message_type == MessageType::Response => return Ok(m),
            _ => continue,
        }
    }
}

/// RFC 1035 4.2.2: each message prefixed with its two-byte length.
fn over_tcp(server: SocketAddr, wire: &[u8], id: u16, deadline: Instant) -> Result<Message, String> {
    let mut s = TcpStream::connect_timeout(&server, left(deadline)?).map_err(io)?;
    let len = u16::try_from(wire.len()).map_err(|_| "query too long".to_string())?;
    s.set_write_timeout(Some(left(deadline)?)).map_err(io)?;
    s.write_all(&[&len.to_be_bytes()[..], wire].concat()).map_err(io)?;
    let mut read = |buf: &mut [u8]| -> Result<(), String> {
        s.set_read_timeout(Some(left(deadline)?)).map_err(io)?;
        s.read_exact(buf).map_err(io)
    };
    let mut len = [0u8; 2];
    read(&mut len)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    read(&mut buf)?;
    let m = Message::from_vec(&buf).map_err(|e| format!("bad answer: {e}"))?;
    if m.metadata.id != id || m.metadata.op_code != OpCode::Query {
        return Err("answer to another query".into());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_in_order_zones_skipped() {
        let text = "# generated\nsearch svc.cluster.local\nnameserver 10.96.0.10\nnameserver fe80::1%eth0\n\
                    nameserver  fd00::53 \noptions ndots:5\n";
        let want: Vec<SocketAddr> = vec!["10.96.0.10:53".parse().unwrap(), "[fd00::53]:53".parse().unwrap()];
        assert_eq!(parse_resolv_conf(text), want);
    }
}
