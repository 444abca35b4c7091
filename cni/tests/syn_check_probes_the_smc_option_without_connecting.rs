//! `meshaccel doctor --syn-check` on a real path: two netns joined by a veth, the real
//! binary run under `ip netns exec`. This kernel has no SMC, so a listener never echoes
//! the option (the VM test, tests/vm/guest/smc-doctor.sh, covers "present" and "stripped").
//! What this proves: the SYN leaves with the SMC option intact and a valid checksum (the
//! listener answers it, and a raw socket on the far side sees the option), the SYN-ACK /
//! RST / silence are told apart, IPv4 and IPv6, and the handshake never completes.
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use etherparse::{Ipv4Slice, TcpHeaderSlice};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{recv, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};
use serde_json::Value;

/// Two netns joined by a veth (10.x.0.1 ↔ 10.x.0.2, fd00:x::1 ↔ ::2), deleted on drop.
struct Path {
    client: String,
    server: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Path {
    fn new(tag: &str) -> Self {
        let pid = std::process::id();
        let p = Path { client: format!("mascc-{tag}-{pid}"), server: format!("mascs-{tag}-{pid}") };
        for ns in [&p.client, &p.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", &p.client, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &p.server]);
        for (ns, host) in [(&p.client, 1), (&p.server, 2)] {
            ip(&["-n", ns, "addr", "add", &format!("10.66.0.{host}/24"), "dev", "eth0"]);
            ip(&["-n", ns, "addr", "add", &format!("fd00:66::{host}/64"), "dev", "eth0", "nodad"]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
        }
        p
    }

    /// Runs `f` on a thread inside `ns`; sockets it makes stay in that netns.
    fn run_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
        thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    /// `meshaccel doctor --syn-check TARGET --json` in the client netns: (exit ok, report).
    fn syn_check(&self, target: &str, timeout: &str) -> (bool, Value) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client, env!("CARGO_BIN_EXE_meshaccel"), "doctor", "--syn-check", target])
            .args(["--timeout", timeout, "--json"])
            .output()
            .unwrap();
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        });
        (out.status.success(), report)
    }
}

impl Drop for Path {
    fn drop(&mut self) {
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

/// The TCP options of the first SYN a raw socket (in the server netns) sees for `port`.
fn syn_options_seen(raw: &OwnedFd, port: u16) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        let mut fds = [PollFd::new(raw.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(200u16)).unwrap() == 0 {
            continue;
        }
        let n = recv(raw.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).unwrap();
        let Ok(ip) = Ipv4Slice::from_slice(&buf[..n]) else { continue };
        let Ok(tcp) = TcpHeaderSlice::from_slice(ip.payload().payload) else { continue };
        if tcp.syn() && !tcp.ack() && tcp.destination_port() == port {
            return Some(tcp.options().to_vec());
        }
    }
    None
}

fn listener(path: &Path, addr: &str) -> TcpListener {
    let addr: SocketAddr = addr.parse().unwrap();
    let l = Path::run_in(&path.server, move || TcpListener::bind(addr).unwrap());
    l.set_nonblocking(true).unwrap();
    l
}

fn never_connected(l: &TcpListener) -> bool {
    matches!(l.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[test]
fn plain_listener_answers_without_the_option_and_no_connection_is_made() {
    let path = Path::new("plain");
    let l = listener(&path, "0.0.0.0:0");
    let port = l.local_addr().unwrap().port();
    let raw = Path::run_in(&path.server, || {
        socket(AddressFamily::Inet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::Tcp).unwrap()
    });
    let (tx, rx) = mpsc::channel();
    let sniffer = thread::spawn(move || tx.send(syn_options_seen(&raw, port)).unwrap());

    let (ok, r) = path.syn_check(&format!("10.66.0.2:{port}"), "3");
    sniffer.join().unwrap();
    let seen = rx.recv().unwrap().expect("the server side saw no SYN");
    assert_eq!(&seen[4..], [1, 1, 254, 6, 0xe2, 0xd4, 0xc3, 0xd9], "SMC option on the wire: {seen:02x?}");
    assert!(!ok, "exit status must say the option did not come back: {r}");
    assert_eq!(r["answer"], "syn-ack", "{r}");
    assert_eq!(r["smcOption"], false, "{r}");
    assert_eq!(r["source"].as_str().unwrap().split(':').next(), Some("10.66.0.1"), "{r}");
    assert!(r["meaning"].as_str().unwrap().contains("not SMC-enabled"), "{r}");
    // The kernel RSTs the SYN-ACK: the listener never gets a connection to accept.
    thread::sleep(Duration::from_millis(200));
    assert!(never_connected(&l), "the probe completed a TCP handshake");
}

#[test]
fn ipv6_listener_answers_too() {
    let path = Path::new("v6");
    let l = listener(&path, "[::]:0");
    let port = l.local_addr().unwrap().port();
    let (_, r) = path.syn_check(&format!("[fd00:66::2]:{port}"), "3");
    assert_eq!((r["answer"].as_str(), r["smcOption"].as_bool()), (Some("syn-ack"), Some(false)), "{r}");
    thread::sleep(Duration::from_millis(200));
    assert!(never_connected(&l));
}

#[test]
fn closed_port_is_a_reset_and_silence_is_no_answer() {
    let path = Path::new("closed");
    // Bound but not listening: the port is taken and closed.
    let closed = Path::run_in(&path.server, || std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap());
    let port = closed.local_addr().unwrap().port();
    let (ok, r) = path.syn_check(&format!("10.66.0.2:{port}"), "3");
    assert!(!ok);
    assert_eq!((r["answer"].as_str(), &r["smcOption"]), (Some("reset"), &Value::Null), "{r}");

    // Nobody owns 10.66.0.9: ARP fails, nothing answers; every SYN was tried.
    let (ok, r) = path.syn_check("10.66.0.9:80", "1.5");
    assert!(!ok);
    assert_eq!((r["answer"].as_str(), r["synsSent"].as_u64()), (Some("none"), Some(3)), "{r}");
    assert!(r["elapsedMs"].as_u64().unwrap() >= 1400, "{r}");
}

#[test]
fn bad_target_is_an_error() {
    for bad in ["10.66.0.2", "10.66.0.2:99999", "10.66.0.2:http"] {
        let out = Command::new(env!("CARGO_BIN_EXE_meshaccel")).args(["doctor", "--syn-check", bad]).output().unwrap();
        assert!(!out.status.success(), "{bad}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--syn-check"),
            "{bad}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
