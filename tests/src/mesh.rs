//! An Istio-style sidecar mesh in test pods: Istio's nat rules in the pod netns (outbound
//! TCP `REDIRECT`ed to the proxy's port 15001 unless the proxy's uid 1337 sends it, inbound
//! to 15006), and a real proxy from Debian (haproxy, TCP mode) as the sidecar, running as
//! uid 1337 in its own container cgroup of the pod. Like Envoy's ORIGINAL_DST cluster, the
//! outbound listener forwards to the destination the app asked for (`SO_ORIGINAL_DST`); the
//! inbound one forwards to the app on 127.0.0.1, same port.
//!
//! A same-node request then crosses three TCP connections (hops): app A → proxy A :15001,
//! proxy A → proxy B :15006 (`REDIRECT`ed in B), proxy B → app B on 127.0.0.1.
//!
//! A dual-stack sidecar ([`Sidecar::inject_dual_stack`]) captures IPv6 too, as Istio does:
//! the same rules through `ip6tables` (`::6` and `::1` for `127.0.0.6` and `127.0.0.1`),
//! `::6` on `lo`, and IPv6 listeners beside the IPv4 ones.
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use aya::maps::{Map, MapData, SockHash};
use meshaccel_common::{names, ConnKey};
use meshaccel_node::bpf;

use crate::names::unique_tag;
use crate::node::TestNode;
use crate::pod::Pod;
use crate::process::Proc;
use crate::{binaries, run};

/// Istio's proxy uid (and gid): its own traffic is not captured again.
pub const PROXY_UID: u32 = 1337;
pub const OUTBOUND_PORT: u16 = 15001;
pub const INBOUND_PORT: u16 = 15006;

/// What `istio-iptables` writes for a sidecar capturing all TCP ports (nat table, the
/// REDIRECT mode; 15008/15090/15021/15020 are Istio's own inbound ports). Loaded with
/// `iptables-restore`, as istio-iptables and istio-cni do.
pub const ISTIO_RULES: &str = "\
*nat
:ISTIO_INBOUND - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_REDIRECT - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
";

/// [`ISTIO_RULES`] as istio-iptables writes them for IPv6 (`ip6tables-restore`): the
/// inbound passthrough source `::6` and the loopback `::1` in place of their IPv4 twins.
pub fn istio_rules_v6() -> String {
    ISTIO_RULES.replace("127.0.0.6/32", "::6/128").replace("127.0.0.1/32", "::1/128")
}

/// Where a sidecar sends the IPv6 connections it captured. haproxy reads the destination
/// before REDIRECT (`SO_ORIGINAL_DST`) for IPv4 only, so its IPv6 listeners forward to
/// fixed addresses, as Envoy's do for a known service: `outbound` is the peer app,
/// `inbound` this pod's app, either on `::1` or (Istio's inbound passthrough) on the pod's
/// address, connected from `::6`.
#[derive(Clone, Copy, Debug)]
pub struct Ipv6Routes {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
}

/// haproxy's form of an IPv6 address and port (the last colon separates the port).
fn haproxy_addr(a: SocketAddr) -> String {
    format!("{}:{}", a.ip(), a.port())
}

/// The IPv6 half of a dual-stack sidecar's haproxy configuration (see [`Ipv6Routes`]).
fn haproxy_config_v6(r: &Ipv6Routes) -> String {
    let source = if r.inbound.ip().is_loopback() { "" } else { " source ::6:0" };
    format!(
        "frontend outbound6
    bind :::{OUTBOUND_PORT} v6only
    default_backend upstream6
backend upstream6
    server upstream {}
frontend inbound6
    bind :::{INBOUND_PORT} v6only
    default_backend local_app6
backend local_app6
    server app {}{source}
",
        haproxy_addr(r.outbound),
        haproxy_addr(r.inbound),
    )
}

/// The sidecar's haproxy configuration. `0.0.0.0:0` connects to the client connection's
/// destination, which haproxy reads with `SO_ORIGINAL_DST` (before REDIRECT); a server
/// without a port uses that destination's port. Without `maxconn` haproxy sizes itself to
/// the open-files limit it is given (uid 1337 cannot raise it). The inbound proxy reaches
/// its app on `127.0.0.1`, or with `passthrough` (the pod's address) as Istio's inbound
/// passthrough does: from `127.0.0.6` to the pod's address.
fn haproxy_config(passthrough: Option<std::net::Ipv4Addr>) -> String {
    let app = passthrough.map_or("127.0.0.1".to_string(), |ip| format!("{ip} source 127.0.0.6"));
    format!(
        "defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend outbound
    bind 0.0.0.0:{OUTBOUND_PORT}
    default_backend original_dst
backend original_dst
    server original 0.0.0.0:0
frontend inbound
    bind 0.0.0.0:{INBOUND_PORT}
    default_backend local_app
backend local_app
    server app {app}
"
    )
}

/// A pod's sidecar: the capture rules and the running proxy. The rules go with the pod's
/// netns; the proxy with its cgroup (or this value, whichever goes first).
pub struct Sidecar {
    proxy: Proc,
    dir: PathBuf,
}

impl Sidecar {
    /// The container cgroup (below the pod cgroup) the proxy runs in.
    pub const CONTAINER: &str = "istio-proxy";

    /// Installs the capture rules in `pod`'s netns and starts the proxy.
    pub fn inject(pod: &Pod) -> Result<Self> {
        Self::start(pod, None, None)
    }

    /// [`Sidecar::inject`] whose inbound proxy reaches the app from `127.0.0.6` on the
    /// pod's address (Istio's inbound passthrough), exempt from capture by
    /// `-s 127.0.0.6/32 -o lo -j RETURN`.
    pub fn inject_passthrough(pod: &Pod) -> Result<Self> {
        Self::start(pod, Some(pod.ip()), None)
    }

    /// [`Sidecar::inject`] capturing IPv6 as well (a dual-stack pod), forwarding it by `routes`.
    pub fn inject_dual_stack(pod: &Pod, routes: Ipv6Routes) -> Result<Self> {
        Self::start(pod, None, Some(routes))
    }

    fn start(pod: &Pod, passthrough: Option<std::net::Ipv4Addr>, v6: Option<Ipv6Routes>) -> Result<Self> {
        apply_iptables(pod, ISTIO_RULES)?;
        if v6.is_some() {
            apply_ip6tables(pod, &istio_rules_v6())?;
            in_netns(pod, "ip", &["-6", "addr", "add", "::6/128", "dev", "lo"])?;
        }
        let config = haproxy_config(passthrough) + &v6.as_ref().map(haproxy_config_v6).unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("meshaccel-sidecar-{}", unique_tag()));
        fs::create_dir_all(&dir)?;
        let started = (|| {
            // Readable by the proxy's uid whatever the umask.
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
            let cfg = dir.join("haproxy.cfg");
            fs::write(&cfg, &config)?;
            fs::set_permissions(&cfg, fs::Permissions::from_mode(0o644))?;
            let (id, cfg) = (PROXY_UID.to_string(), cfg.display().to_string());
            let setpriv = ["--reuid", &id, "--regid", &id, "--clear-groups", "--", "haproxy", "-db", "-f", &cfg];
            container(pod, Self::CONTAINER, "setpriv", &setpriv)
        })();
        let sidecar = match started {
            Ok(proxy) => Self { proxy, dir },
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        wait_listening(pod, &[OUTBOUND_PORT, INBOUND_PORT])
            .with_context(|| format!("proxy's stderr: {}", sidecar.proxy.stderr()))?;
        Ok(sidecar)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `program args…` in `pod`, in the container cgroup `name` below the pod cgroup (as
/// runc puts each container of a pod), so its CPU time is accounted apart.
pub fn container_command(pod: &Pod, name: &str, program: &str, args: &[&str]) -> Result<Command> {
    let cg = pod.cgroup().join(name);
    fs::create_dir_all(&cg)?;
    let mut cmd = Command::new(binaries::testkit());
    cmd.arg("exec").arg("--netns").arg(pod.netns_path()).arg("--cgroup").arg(&cg).arg("--").arg(program).args(args);
    Ok(cmd)
}

/// [`container_command`], started as a [`Proc`].
pub fn container(pod: &Pod, name: &str, program: &str, args: &[&str]) -> Result<Proc> {
    Proc::spawn(
        &format!("{}/{name}: {program} {}", pod.name(), args.join(" ")),
        container_command(pod, name, program, args)?,
    )
}

/// A host tool (iptables, ss) run in `pod`'s netns only: it is no pod process.
pub fn in_netns(pod: &Pod, program: &str, args: &[&str]) -> Result<String> {
    let net = format!("--net={}", pod.netns_path().display());
    let mut all = vec![net.as_str(), "--", program];
    all.extend_from_slice(args);
    run("nsenter", &all)
}

/// Loads `rules` (iptables-restore format) into `pod`'s netns, keeping what is there.
pub fn apply_iptables(pod: &Pod, rules: &str) -> Result<()> {
    restore(pod, "iptables-restore", rules)
}

/// [`apply_iptables`] for IPv6 (`ip6tables-restore`).
pub fn apply_ip6tables(pod: &Pod, rules: &str) -> Result<()> {
    restore(pod, "ip6tables-restore", rules)
}

fn restore(pod: &Pod, tool: &str, rules: &str) -> Result<()> {
    let net = format!("--net={}", pod.netns_path().display());
    let mut child = Command::new("nsenter")
        .args([net.as_str(), "--", tool, "--noflush", "--wait"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {tool}"))?;
    child.stdin.take().unwrap().write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "{tool} in {}: {}", pod.name(), String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Waits until something listens on each of `ports` in `pod`'s netns.
pub fn wait_listening(pod: &Pod, ports: &[u16]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listening = in_netns(pod, "ss", &["-Hltn"])?;
        let missing: Vec<_> = ports.iter().filter(|p| !listening.contains(&format!(":{p} "))).collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{}: nothing listens on {missing:?} after 30 s", pod.name());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// One established TCP socket of a pod, as `ss` shows it (the socket's own addresses:
/// after REDIRECT the accepting socket's local address is the proxy's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Socket {
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

pub fn established(pod: &Pod) -> Result<Vec<Socket>> {
    let out = in_netns(pod, "ss", &["-Htn", "state", "established"])?;
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            ensure!(f.len() >= 4, "ss line {l:?}");
            let parse = |s: &str| s.parse::<SocketAddr>().with_context(|| format!("address {s:?} in {l:?}"));
            Ok(Socket { local: parse(f[f.len() - 2])?, peer: parse(f[f.len() - 1])? })
        })
        .collect()
}

/// CPU time used by a container (or the whole pod, `container` ""), from cgroup v2
/// `cpu.stat`: (user, system) in µs. System time includes the softirq network processing
/// that ran in the container's tasks' context.
pub fn cpu_usec(pod: &Pod, container: &str) -> Result<(u64, u64)> {
    let path = pod.cgroup().join(container).join("cpu.stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let field = |k: &str| -> Result<u64> {
        let v = stat
            .lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(' '))
            .with_context(|| format!("{k} in {}", path.display()))?;
        Ok(v.trim().parse()?)
    };
    Ok((field("user_usec")?, field("system_usec")?))
}

/// Every meshaccel counter of the node, by name (all zero before its programs are loaded).
pub fn counters(node: &TestNode) -> Result<BTreeMap<&'static str, u64>> {
    if !bpf::is_loaded(node.pins()) {
        return Ok(BTreeMap::new());
    }
    Ok(bpf::read_counters(node.pins())?.into_iter().map(|(c, v)| (c.name(), v)).collect())
}

/// `after - before`, per counter.
pub fn counters_since(
    after: &BTreeMap<&'static str, u64>,
    before: &BTreeMap<&'static str, u64>,
) -> BTreeMap<&'static str, u64> {
    after.iter().map(|(k, v)| (*k, v - before.get(k).copied().unwrap_or(0))).collect()
}

/// The keys of every socket in the node's sockhash right now (both ends of each paired
/// connection, and client ends waiting for their server end).
pub fn sockhash_keys(node: &TestNode) -> Result<Vec<ConnKey>> {
    let path = node.pins().map(names::MAP_SOCKS);
    let map = Map::from_map_data(MapData::from_pin(&path).with_context(|| format!("open {}", path.display()))?)?;
    let socks: SockHash<MapData, ConnKey> = map.try_into()?;
    Ok(socks.keys().collect::<Result<_, _>>()?)
}

/// The sockhash keys of the connections whose client end is `client`.
pub fn keys_of(keys: &[ConnKey], client: SocketAddr) -> Vec<ConnKey> {
    let v6 = match client.ip() {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped(),
        std::net::IpAddr::V6(a) => a,
    };
    let o = v6.octets();
    let ip: [u32; 4] =
        std::array::from_fn(|i| u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]));
    keys.iter().filter(|k| k.client_ip == ip && k.client_port == u32::from(client.port())).copied().collect()
}

/// Whether both ends of the connection whose client end is `client` are in the sockhash.
pub fn both_ends_paired(keys: &[ConnKey], client: SocketAddr) -> bool {
    let mine = keys_of(keys, client);
    let ends = |role| mine.iter().filter(|k| k.role == role).count();
    ends(ConnKey::CLIENT) == 1 && ends(ConnKey::SERVER) == 1
}

/// The request/response tool of this package (`meshaccel-rr echo|rr`).
pub fn loadgen() -> PathBuf {
    binaries::testkit().with_file_name("meshaccel-rr")
}

/// `meshaccel-rr echo` in `pod` (container `app`), listening; it accepts only tags
/// with one of `prefixes`.
pub fn echo_server(pod: &Pod, listen: &str, prefixes: &[u32]) -> Result<Proc> {
    let prefixes = prefixes.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let mut p = container(
        pod,
        "app",
        &loadgen().display().to_string(),
        &["echo", "--listen", listen, "--expect-prefixes", &prefixes],
    )?;
    p.expect_event("listening", crate::scenario::TIMEOUT)?;
    Ok(p)
}

/// Stops an [`echo_server`]; its report.
pub fn stop(mut server: Proc) -> Result<serde_json::Value> {
    server.send("stop")?;
    server.finish(crate::scenario::TIMEOUT)
}

/// `meshaccel-rr rr` in `pod` (container `app`) towards `connect`, tagging its
/// connections with `prefix`; `args` as that command takes them.
pub fn rr(pod: &Pod, connect: &str, prefix: u32, args: &[&str]) -> Result<Proc> {
    let prefix = prefix.to_string();
    let mut all = vec!["rr", "--connect", connect, "--tag-prefix", &prefix];
    all.extend_from_slice(args);
    container(pod, "app", &loadgen().display().to_string(), &all)
}
