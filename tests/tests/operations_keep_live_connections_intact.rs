//! What the installer's operations do to live redirected connections: 100 connections between
//! two pods (non-blocking ends, as event-driven programs use, so they are redirected) stream
//! checksummed data both ways (`verify` sends a seeded random stream, the echo sends it back,
//! the client checks every byte) while the installer is restarted (SIGTERM, SIGKILL), upgraded
//! in place, upgraded across a map-layout change (a generation switch), and while `uninstall`
//! runs. Every connection must end with every byte intact, and connections opened after the
//! event must run on the programs then installed (plain after uninstall). docs/installer.md,
//! Operations, quotes what this measures.
use std::fs;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use aya::maps::{MapData, MapInfo, PerCpuArray};
use aya::programs::{CgroupSock, CgroupSockAttachType};
use meshaccel_common::{names, Counter};
use meshaccel_node::pins::Pins;
use meshaccel_node::{bpf, sys};
use meshaccel_tests::containerd::installer::Installer;
use meshaccel_tests::containerd::{Containerd, CriPod};
use meshaccel_tests::node::{counters, Counters};
use meshaccel_tests::process::Proc;
use meshaccel_tests::scenario::{clean, TIMEOUT};

const CONNS: u32 = 100;
/// Per connection and direction, sent in bursts of ~350 KiB every [`PAUSE_MS`]: at least
/// 12 s, so that every event happens mid-stream.
const BYTES: u64 = 16 << 20;
const PAUSE_MS: &str = "250";

/// 100 connections streaming; the counters from before they were opened.
struct Live {
    what: &'static str,
    server: Proc,
    client: Proc,
    pins: Pins,
    before: Counters,
    started: Instant,
}

/// Two pods on one node, its pins.
struct Pair<'a> {
    pins: &'a Pins,
    server: &'a CriPod,
    client: &'a CriPod,
}

fn start(what: &'static str, pair: &Pair, port: u16, conns: u32, bytes: u64, pause_ms: &str) -> Result<Live> {
    let before = counters(pair.pins)?;
    let (server, client) = streams(pair, port, conns, bytes, pause_ms)?;
    Ok(Live { what, server, client, pins: pair.pins.clone(), before, started: Instant::now() })
}

/// An echo server and a `verify` client of `conns` connections, streaming.
fn streams(pair: &Pair, port: u16, conns: u32, bytes: u64, pause_ms: &str) -> Result<(Proc, Proc)> {
    let addr = format!("{}:{port}", pair.server.ip);
    let (n, b) = (conns.to_string(), bytes.to_string());
    let mut s = pair.server.testkit(&["serve", "--listen", &addr, "--mode", "echo", "--conns", &n, "--io", "poll"])?;
    s.expect_event("listening", TIMEOUT)?;
    let seed = port.to_string();
    let args = [
        "client",
        "--connect",
        &addr,
        "--mode",
        "verify",
        "--conns",
        &n,
        "--bytes",
        &b,
        "--seed",
        &seed,
        "--io",
        "poll",
    ];
    let mut c = pair.client.testkit(&[&args[..], &["--pause-ms", pause_ms, "--wait-go"]].concat())?;
    c.expect_event("ready", TIMEOUT)?;
    c.send("go")?;
    Ok((s, c))
}

impl Live {
    /// Asserts every connection was inserted and bytes are being redirected, while streaming.
    fn assert_redirected(&self) -> Result<Counters> {
        std::thread::sleep(Duration::from_millis(500));
        let now = counters(&self.pins)?;
        let d = now.since(&self.before);
        ensure!(d.sockets_inserted == 2 * CONNS as u64, "{}: not every end was inserted: {d:?}", self.what);
        ensure!(d.bytes_redirected > 0, "{}: nothing redirected: {d:?}", self.what);
        Ok(now)
    }

    /// Asserts the streams are still running (the event happened mid-stream).
    fn assert_streaming(&mut self) -> Result<()> {
        eprintln!(
            "[operations] {}: event done {:.1} s into the streams",
            self.what,
            self.started.elapsed().as_secs_f64()
        );
        ensure!(
            self.client.poll_event("done", Duration::ZERO)?.is_none(),
            "{}: the streams ended before the event did; raise BYTES",
            self.what
        );
        Ok(())
    }

    /// Waits for both ends; every connection must have every byte back, in order.
    fn finish(self) -> Result<()> {
        let what = self.what;
        let c = clean(self.client.finish(TIMEOUT)?).with_context(|| format!("{what}: client"))?;
        clean(self.server.finish(TIMEOUT)?).with_context(|| format!("{what}: server"))?;
        let conns = c["conns"].as_array().context("conns")?;
        ensure!(conns.len() == CONNS as usize, "{what}: {} connections reported", conns.len());
        for (i, r) in conns.iter().enumerate() {
            ensure!(r["received"] == BYTES && r["written"] == BYTES, "{what}: conn {i} moved {r}");
        }
        eprintln!(
            "[operations] {what}: {CONNS} connections x {BYTES} B each way intact in {:.1} s",
            self.started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// Ten short connections after an event: intact, and redirected or not as `redirected` says.
fn new_connections(what: &str, pair: &Pair, port: u16, redirected: bool) -> Result<()> {
    let before = counters(pair.pins)?;
    let live = start("new connections", pair, port, 10, 1 << 20, "0")?;
    let c = clean(live.client.finish(TIMEOUT)?)?;
    clean(live.server.finish(TIMEOUT)?)?;
    ensure!(c["conns"].as_array().is_some_and(|a| a.len() == 10), "{what}: {c}");
    let d = counters(pair.pins)?.since(&before);
    if redirected {
        ensure!(d.sockets_inserted == 20 && d.bytes_redirected > 0, "{what}: new connections not redirected: {d:?}");
    } else {
        ensure!(d == Counters::default(), "{what}: counters moved with nothing installed: {d:?}");
    }
    Ok(())
}

/// An "older version" pinned where the sk_msg and sock_ops programs go: other programs (the
/// pinned sock_create, whose tags differ). The attached programs stay the running ones, so the
/// next start sees an upgrade over maps of the same layout: it loads this version's programs,
/// attaches its sk_msg to the sockhash and moves every pod's link to its sock_ops.
fn pin_an_older_version(pins: &Pins) -> Result<()> {
    for pin in [pins.skmsg(), pins.sockops()] {
        let mut other = CgroupSock::from_pin(pins.sock_create(), CgroupSockAttachType::SockCreate)?;
        fs::remove_file(&pin)?;
        other.pin(&pin)?;
    }
    Ok(())
}

/// A build whose maps have another layout: a `SOCKS` with 8-byte keys pinned where the
/// sockhash goes (the running programs keep theirs). The next start must switch generations.
fn pin_another_layout(pins: &Pins) -> Result<()> {
    const BPF_MAP_TYPE_SOCKHASH: u32 = 18;
    let map = sys::map_create(BPF_MAP_TYPE_SOCKHASH, 8, 4, 16)?;
    let path = pins.map(names::MAP_SOCKS);
    fs::remove_file(&path)?;
    Ok(sys::obj_pin(map.as_fd(), &path)?)
}

/// The kernel ids of the pinned sockhash and counters: the generation serving now.
fn generation(pins: &Pins) -> Result<(u32, u32)> {
    Ok((MapInfo::from_pin(pins.map(names::MAP_SOCKS))?.id(), MapInfo::from_pin(pins.map(names::MAP_COUNTERS))?.id()))
}

/// Bytes redirected by the generation whose counters map has kernel id `id` (pinned or not).
fn bytes_redirected_by(id: u32) -> Result<u64> {
    let counters: PerCpuArray<MapData, u64> = aya::maps::Map::from_map_data(MapData::from_id(id)?)?.try_into()?;
    Ok(counters.get(&(Counter::BytesRedirected as u32), 0)?.iter().sum())
}

/// Waits until the kernel has freed the map with id `id` (its last user is gone).
fn wait_freed(what: &str, id: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while MapInfo::from_id(id).is_ok() {
        ensure!(Instant::now() < deadline, "{what}: the previous generation's map {id} outlived its connections");
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Runs `event` while batches of 5 short connections (64 KiB each way) run one after
/// another; every batch must be intact. Returns what `event` returned and how many
/// connections were opened.
fn churn_while<T: Send>(pair: &Pair, port: u16, event: impl FnOnce() -> Result<T>) -> Result<(T, usize)> {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let churn = scope.spawn(|| -> Result<usize> {
            let mut conns = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (server, client) = streams(pair, port, 5, 64 << 10, "0")?;
                clean(client.finish(TIMEOUT)?).context("churn client")?;
                clean(server.finish(TIMEOUT)?).context("churn server")?;
                conns += 5;
            }
            Ok(conns)
        });
        let out = event();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let conns = churn.join().expect("churn thread")?;
        Ok((out?, conns))
    })
}

fn restart(node: &Containerd, installer: Installer, kill: bool) -> Result<Installer> {
    if kill {
        drop(installer); // SIGKILL
    } else {
        installer.stop()?;
    }
    node.start_installer()
}

#[test]
fn restarts_upgrades_and_uninstall_keep_live_connections_intact() -> Result<()> {
    let node = Containerd::start()?;
    node.write_primary_conflist()?;
    node.wait_for_cni_config("bridge")?;
    let mut installer = node.start_installer()?;
    node.wait_for_cni_config("meshaccel")?;
    let server = node.run_pod("server", &[])?;
    let client = node.run_pod("client", &[])?;
    let pair = Pair { pins: node.pins(), server: &server, client: &client };
    let pod_links = || -> Result<Vec<u32>> {
        bpf::list_pods(node.pins())?
            .iter()
            .map(|id| Ok(bpf::pod_link(node.pins(), id)?.context("pod without link")?.prog_id))
            .collect()
    };

    for (port, kill) in [(7001, false), (7002, true)] {
        let what = if kill { "installer SIGKILL + start" } else { "installer SIGTERM + start" };
        let prog = bpf::sockops_prog_id(node.pins())?;
        let mut live = start(what, &pair, port, CONNS, BYTES, PAUSE_MS)?;
        let at_event = live.assert_redirected()?;
        installer = restart(&node, installer, kill)?;
        live.assert_streaming()?;
        ensure!(bpf::sockops_prog_id(node.pins())? == prog, "{what}: the programs were reloaded");
        live.finish()?;
        let after = counters(node.pins())?.since(&at_event);
        ensure!(after.bytes_redirected > 0, "{what}: redirection stopped at the event: {after:?}");
        new_connections(what, &pair, port + 100, true)?;
    }

    let what = "upgrade in place (same map layout)";
    let old = bpf::sockops_prog_id(node.pins())?;
    let mut live = start(what, &pair, 7003, CONNS, BYTES, PAUSE_MS)?;
    let at_event = live.assert_redirected()?;
    installer.stop()?;
    pin_an_older_version(node.pins())?;
    installer = node.start_installer()?;
    live.assert_streaming()?;
    ensure!(installer.log_text().contains("upgraded the BPF programs in place"), "{}", installer.log_text());
    let new = bpf::sockops_prog_id(node.pins())?;
    ensure!(new != old, "{what}: the sock_ops program was not replaced");
    ensure!(pod_links()?.iter().all(|p| *p == new), "{what}: pod links not moved: {:?}", pod_links()?);
    live.finish()?;
    let after = counters(node.pins())?.since(&at_event);
    ensure!(after.bytes_redirected > 0, "{what}: redirection stopped at the event: {after:?}");
    new_connections(what, &pair, 7103, true)?;

    // The refused case of in-place swapping: another map layout. The previous generation is
    // unpinned but keeps serving its connections; the pods are attached to a fresh one.
    let what = "upgrade across a map layout change";
    let (old_socks, old_counters) = generation(node.pins())?;
    let mut live = start(what, &pair, 7005, CONNS, BYTES, PAUSE_MS)?;
    live.assert_redirected()?;
    let at_event = bytes_redirected_by(old_counters)?;
    // Short connections opened all through the switch: some have one end established on
    // each side of it; every one must still move its bytes intact.
    let churned = churn_while(&pair, 7205, || {
        installer.stop()?;
        pin_another_layout(node.pins())?;
        node.start_installer()
    })?;
    installer = churned.0;
    eprintln!("[operations] {what}: {} short connections opened across the switch, all intact", churned.1);
    live.assert_streaming()?;
    ensure!(installer.log_text().contains("map layout changed"), "{}", installer.log_text());
    let adopted = installer.adoptions();
    ensure!(adopted.values().filter(|o| o.starts_with("Adopted")).count() == 2, "{what}: {adopted:?}");
    let new = bpf::sockops_prog_id(node.pins())?;
    ensure!(pod_links()?.iter().all(|p| *p == new), "{what}: pod links not on the new generation");
    ensure!(generation(node.pins())?.0 != old_socks, "{what}: the sockhash was not replaced");
    live.finish()?;
    ensure!(bytes_redirected_by(old_counters)? > at_event, "{what}: the previous generation stopped redirecting");
    wait_freed(what, old_socks)?;
    new_connections(what, &pair, 7105, true)?;

    let what = "uninstall";
    let (socks, counters_id) = generation(node.pins())?;
    let mut live = start(what, &pair, 7004, CONNS, BYTES, PAUSE_MS)?;
    live.assert_redirected()?;
    let at_event = bytes_redirected_by(counters_id)?;
    node.uninstall()?;
    live.assert_streaming()?;
    ensure!(!node.pins().root().exists(), "{what}: pins left");
    live.finish()?;
    ensure!(bytes_redirected_by(counters_id)? > at_event, "{what}: live connections stopped being redirected");
    wait_freed(what, socks)?;
    new_connections(what, &pair, 7104, false)?;

    installer.stop()?;
    node.stop_pod(&server)?;
    node.stop_pod(&client)?;
    Ok(())
}
