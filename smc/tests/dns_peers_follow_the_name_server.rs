//! `dns:` probe peers against a real name server (Debian's dnsmasq on loopback): what the
//! name has now is what gets probed, and every way a lookup can fail is an error (so the
//! verdict fails and SMC stays off), within the deadline.
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshaccel_node::conf::smc::{Nameserver, Peer};
use meshaccel_smc::dns;

const NAME: &str = "meshaccel-responder.meshaccel.svc.cluster.local";

/// dnsmasq answering from a hosts file only (no upstream, no /etc/hosts), on a free port.
struct NameServer {
    child: Child,
    hosts: PathBuf,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl NameServer {
    fn start(hosts: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, hosts).unwrap();
        // A free port: bound, read back, released (dnsmasq binds it right after).
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("dnsmasq")
            .args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces"])
            .args(["--listen-address=127.0.0.1", "--pid-file=", "--user=root", "--group=root"])
            // Authoritative for these, as CoreDNS is for cluster.local: a name without AAAA
            // gets an empty answer, not REFUSED (there is no upstream to ask).
            .args(["--local=/cluster.local/", "--local=/test/"])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", file.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (tests/setup installs dnsmasq-base)");
        let ns = NameServer { child, hosts: file, addr: SocketAddr::from(([127, 0, 0, 1], port)), _dir: dir };
        ns.wait_ready();
        ns
    }

    /// Until a query for a name it has answers (dnsmasq binds after it forked its logger).
    fn wait_ready(&self) {
        let until = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        while Instant::now() < until {
            let probe = [Peer::Dns { name: "ready.test".into(), port: 1 }];
            match dns::resolve(&probe, &[Nameserver(self.addr)], &BTreeSet::new(), soon()) {
                Ok(_) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("dnsmasq on {} never answered: {last}", self.addr);
    }

    /// New records, re-read on SIGHUP as an operator's (or CoreDNS's) change would be seen.
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::SIGHUP).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hosts(ips: &[&str]) -> String {
    let mut s: String = ips.iter().map(|ip| format!("{ip} {NAME}\n")).collect();
    s.push_str("127.0.0.9 ready.test\n");
    s
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(2)
}

fn peer(port: u16) -> Vec<Peer> {
    vec![Peer::Dns { name: NAME.into(), port }]
}

fn addrs(v: &[&str]) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = v.iter().map(|s| s.parse().unwrap()).collect();
    v.sort();
    v
}

#[test]
fn a_name_resolves_to_every_address_it_has_now_without_this_node() {
    let ns = NameServer::start(&hosts(&["10.0.0.2", "10.0.0.3", "fd00::4"]));
    let servers = [Nameserver(ns.addr)];
    let none = BTreeSet::new();
    let mut peers = peer(7471);
    peers.push(Peer::Addr("192.0.2.7:7471".parse().unwrap()));
    let got = dns::resolve(&peers, &servers, &none, soon()).unwrap();
    assert_eq!(got, addrs(&["10.0.0.2:7471", "10.0.0.3:7471", "[fd00::4]:7471", "192.0.2.7:7471"]));

    // The Service lists this node too: its own address is not a peer.
    let own: BTreeSet<IpAddr> = ["10.0.0.3".parse().unwrap()].into();
    let got = dns::resolve(&peer(7471), &servers, &own, soon()).unwrap();
    assert_eq!(got, addrs(&["10.0.0.2:7471", "[fd00::4]:7471"]));

    // A node joins, another leaves: the next resolution follows.
    ns.set_hosts(&hosts(&["10.0.0.2", "10.0.0.5"]));
    let got = dns::resolve(&peer(7471), &servers, &none, soon()).unwrap();
    assert_eq!(got, addrs(&["10.0.0.2:7471", "10.0.0.5:7471"]));

    // Only this node left: nothing to verify against, which is a failure, not a pass.
    ns.set_hosts(&hosts(&["10.0.0.2"]));
    let own: BTreeSet<IpAddr> = ["10.0.0.2".parse().unwrap()].into();
    let e = dns::resolve(&peer(7471), &servers, &own, soon()).unwrap_err();
    assert!(e.contains("only to this node"), "{e}");
}

#[test]
fn an_unknown_name_or_a_name_without_addresses_is_an_error() {
    let ns = NameServer::start(&hosts(&["10.0.0.2"]));
    let servers = [Nameserver(ns.addr)];
    let unknown = [Peer::Dns { name: "nosuch.meshaccel.svc.cluster.local".into(), port: 7471 }];
    let e = dns::resolve(&unknown, &servers, &BTreeSet::new(), soon()).unwrap_err();
    assert!(e.contains("NXDOMAIN"), "{e}");

    ns.set_hosts("");
    let e = dns::resolve(&peer(7471), &servers, &BTreeSet::new(), soon()).unwrap_err();
    assert!(e.starts_with(&format!("dns:{NAME}:7471")), "{e}");
}

#[test]
fn a_server_that_does_not_answer_fails_within_the_deadline_and_the_next_one_is_asked() {
    // Bound and never read: queries vanish, as with a dropped packet or a dead pod.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = Nameserver(silent.local_addr().unwrap());
    let start = Instant::now();
    let e = dns::resolve(&peer(7471), &[silent], &BTreeSet::new(), Instant::now() + Duration::from_millis(500))
        .unwrap_err();
    let took = start.elapsed();
    assert!(e.contains("timed out"), "{e}");
    assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(5), "{took:?}");

    let ns = NameServer::start(&hosts(&["10.0.0.2"]));
    let got = dns::resolve(&peer(7471), &[silent, Nameserver(ns.addr)], &BTreeSet::new(), soon()).unwrap();
    assert_eq!(got, addrs(&["10.0.0.2:7471"]));
}

#[test]
fn an_answer_too_large_for_udp_is_fetched_over_tcp() {
    // 400 nodes: ~6.4 KB of A records, over the 4096 bytes asked for over UDP.
    let ips: Vec<String> = (0..400).map(|i| format!("10.2.{}.{}", i / 250, 1 + i % 250)).collect();
    let ns = NameServer::start(&hosts(&ips.iter().map(String::as_str).collect::<Vec<_>>()));
    let got = dns::resolve(&peer(7471), &[Nameserver(ns.addr)], &BTreeSet::new(), soon()).unwrap();
    assert_eq!(got.len(), 400);
}
