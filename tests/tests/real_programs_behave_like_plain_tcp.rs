//! Conformance: real programs, nobody's test code, each run between two opted-out pods (plain
//! TCP, same chain, `meshaccel.io/sockmap: "false"`) and between two accelerated pods of one
//! node, must observe exactly the same (bytes by checksum, exit codes, error messages). The
//! opted-out run must also show what the program is known to do, so a broken scenario fails
//! as such instead of comparing two failures. The `…_over_ipv6_…` twins run the same
//! programs between dual-stack pods over their IPv6 addresses (servers on `[::]`): Python
//! blocking half-close, asyncio, netcat and curl←nginx, one of each class and I/O style.
//!
//! meshaccel redirects a connection only when both ends are non-blocking: the connecting
//! socket has `O_NONBLOCK` when the connection is established, and so has the server's
//! listening socket; an end found blocking later keeps the connection on plain TCP. (The
//! kernel's sockmap receive path, `tcp_bpf_recvmsg`, returns EAGAIN to blocking reads woken
//! without sockmap data: at FIN, RST, write-space wakeups, plain bytes arriving.) So each
//! case also proves its class with the node's counters: **accelerated** cases need
//! `bytes_redirected > 0`, **plain** cases need nothing redirected.
//!
//! Classes come from what the programs really do, checked with
//! `strace -f -e trace=socket,connect,fcntl,ioctl,accept,accept4,listen` on Debian 12's
//! packages (loopback, outside the tests, which do not use strace):
//! - Python `socket.create_connection`/`create_server` without timeout: no `O_NONBLOCK`
//!   anywhere → plain.
//! - netcat-openbsd: the client is non-blocking (`SOCK_NONBLOCK`, connect `EINPROGRESS`,
//!   then poll), but `nc -l`'s listening socket is blocking (`socket()` without flags, no
//!   `fcntl`; only the accepted socket gets `SOCK_NONBLOCK`) → plain, by the listener.
//! - socat, default mode: blocking `socket()`, `connect() = 0`, blocking `listen`/`accept`,
//!   a `select()` loop over blocking fds → plain.
//! - Python asyncio: `FIONBIO` on the listener, and on the client socket before its connect
//!   (`EINPROGRESS`) → accelerated.
//! - redis-server: listener `O_NONBLOCK`, `accept4(SOCK_NONBLOCK)`. **redis-cli differs from
//!   the first guess**: hiredis connects non-blocking (`EINPROGRESS`), then once connected
//!   clears `O_NONBLOCK` (`fcntl(F_SETFL, O_RDWR)`) and does blocking I/O → plain.
//!   redis-benchmark's load connections stay non-blocking (its first one, fetching the
//!   server's config, turns blocking like redis-cli's) → accelerated.
//! - curl: `O_NONBLOCK` before connect (`EINPROGRESS`), event-driven; nginx: listener
//!   `FIONBIO`, `accept4(SOCK_NONBLOCK)`; haproxy: listener and server-side connect
//!   `O_NONBLOCK` → accelerated.
//! - Java 17: `java.net.Socket`/`ServerSocket` (NioSocketImpl without timeouts) never set
//!   `O_NONBLOCK`, connect returns 0 → plain; NIO channels with `configureBlocking(false)`
//!   set it on the listener and before connect → accelerated.
use std::fs;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use meshaccel_tests::program::{run_in, script, sha256, Outcome, Running};
use meshaccel_tests::scenario::{Family, TIMEOUT};
use meshaccel_tests::{Counters, Pod};
use serde_json::{json, Value};

const PYTHON: &str = "/usr/bin/python3";
/// A daemon or a JVM compiling its source starts within this, even on a loaded machine.
const START: Duration = Duration::from_secs(90);
/// Time a server gets to finish once its client failed (it may wait for connections that
/// never come).
const AFTER_FAILURE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Both ends non-blocking: the connection is redirected.
    Accelerated,
    /// An end blocks: the connection stays on plain TCP.
    Plain,
}

/// What a scenario gets for one run: its pods, in the order the test named them, the
/// address family to talk over, and a directory of its own.
struct Run<'a> {
    pods: &'a [Pod],
    family: Family,
    dir: PathBuf,
}

impl Run<'_> {
    /// `pod`'s address as a program takes it before `:PORT` (IPv6 in brackets).
    fn host(&self, pod: &Pod) -> String {
        match self.family.ip(pod) {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        }
    }

    /// What a server's `PORT` argument becomes: every address of the family.
    fn bind(&self) -> &'static str {
        match self.family {
            Family::V4 => "",
            Family::V6 => "[::]:",
        }
    }
}

/// Runs `scenario` between opted-out pods, then between accelerated pods (each a fresh set of
/// `pods`, on one node), and checks that the plain run shows `expected` (every field given
/// there; other fields are only compared between the runs), that the accelerated run observed
/// exactly what the plain one did, and that the counters prove `class`.
fn conforms(class: Class, pods: &[&str], expected: Value, scenario: impl Fn(&Run) -> Result<Value>) {
    conforms_over(Family::V4, class, pods, expected, scenario)
}

/// [`conforms`] over `family` (IPv6: between dual-stack pods, over their IPv6 addresses).
fn conforms_over(
    family: Family,
    class: Class,
    pods: &[&str],
    expected: Value,
    scenario: impl Fn(&Run) -> Result<Value>,
) {
    let node = family.node().unwrap();
    let observe = |accelerated: bool| -> (Result<Value>, Counters) {
        let kind = if accelerated { "accelerated" } else { "opted-out" };
        let made: Vec<Pod> = pods
            .iter()
            .map(|p| {
                let name = format!("{p}-{}", &kind[..1]);
                if accelerated { node.accelerated_pod(&name) } else { node.opted_out_pod(&name) }.unwrap()
            })
            .collect();
        let dir = node.scratch_dir().unwrap().join(kind);
        fs::create_dir_all(&dir).unwrap();
        let before = node.stats().unwrap();
        let seen = scenario(&Run { pods: &made, family, dir });
        (seen, node.stats().unwrap().since(&before))
    };

    let (plain, plain_counters) = observe(false);
    let plain = plain.unwrap_or_else(|e| panic!("the scenario failed on plain TCP (opted-out pods): {e:#}"));
    eprintln!("opted-out run: {plain:#}");
    let wrong = differences("", &plain, &expected, "opted-out", "expected", true);
    assert!(
        wrong.is_empty(),
        "plain TCP itself did not do what the program does:\n  {}\nobserved: {plain:#}",
        wrong.join("\n  ")
    );
    assert_eq!(
        (plain_counters.bytes_redirected, plain_counters.msgs_redirected, plain_counters.sockets_inserted),
        (0, 0, 0),
        "opted-out pods were accelerated: {plain_counters:?}"
    );

    let (accel, d) = observe(true);
    let mut problems = match &accel {
        Ok(accel) => differences("", accel, &plain, "accelerated", "opted-out", false),
        Err(e) => vec![format!("the run between accelerated pods failed: {e:#}")],
    };
    match class {
        Class::Accelerated if d.bytes_redirected == 0 => {
            problems.push("expected accelerated (both ends non-blocking), but nothing was redirected".into())
        }
        Class::Plain if d.bytes_redirected > 0 || d.msgs_redirected > 0 => problems.push(format!(
            "expected plain TCP (an end is blocking), but {} bytes in {} messages were redirected",
            d.bytes_redirected, d.msgs_redirected
        )),
        _ => {}
    }
    assert!(
        problems.is_empty(),
        "between accelerated pods ({class:?} expected), unlike plain TCP:\n  {}\ncounters of the accelerated run: {d:?}\naccelerated run: {}",
        problems.join("\n  "),
        accel.as_ref().map_or_else(|e| format!("{e:#}"), |v| format!("{v:#}"))
    );
    eprintln!("accelerated run: counters {d:?}");
}

/// Where `got` differs from `want`, field by field. `subset`: only fields present in `want`
/// count.
fn differences(path: &str, got: &Value, want: &Value, got_name: &str, want_name: &str, subset: bool) -> Vec<String> {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            let keys: Vec<&String> = w.keys().chain(g.keys().filter(|k| !subset && !w.contains_key(*k))).collect();
            keys.into_iter()
                .flat_map(|k| {
                    let (gv, wv) = (g.get(k).unwrap_or(&Value::Null), w.get(k).unwrap_or(&Value::Null));
                    differences(&format!("{path}.{k}"), gv, wv, got_name, want_name, subset)
                })
                .collect()
        }
        _ if got == want => vec![],
        _ => vec![format!("{path}: {got_name} {got} | {want_name} {want}")],
    }
}

fn random_file(path: &Path, bytes: usize) -> Result<Vec<u8>> {
    let mut data = vec![0u8; bytes];
    fs::File::open("/dev/urandom")?.read_exact(&mut data)?;
    fs::write(path, &data).with_context(|| format!("write {}", path.display()))?;
    Ok(data)
}

/// What a program that is not ours showed: exit code, stderr, and what it printed, by
/// checksum and size.
fn seen(o: &Outcome) -> Value {
    json!({"exit": o.code, "stderr": o.stderr, "stdout_sha256": sha256(&o.stdout).unwrap(), "stdout_bytes": o.stdout.len()})
}

/// The JSON report one of our scripts (tests/programs) printed last, with its exit code.
fn report(o: &Outcome) -> Value {
    let text = o.stdout_text();
    let mut v = text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| json!({"stdout": text}));
    v.as_object_mut().map(|m| m.remove("event"));
    v["exit"] = json!(o.code);
    // A traceback or a JVM warning is part of what the program showed.
    v["stderr"] = json!(o.stderr);
    v
}

/// A client/server pair of our scripts: the server (pods[0]) started and listening, then the
/// client (pods[1]) run to completion, then the server's end. Both reports.
fn client_server(run: &Run, port: u16, server: (&str, Vec<String>), client: (&str, Vec<String>)) -> Result<Value> {
    let [srv_pod, cli_pod] = run.pods else { panic!("two pods") };
    let args = |v: &[String]| {
        v.iter().map(|s| s.replace("{server}", &run.host(srv_pod)).replace("{bind}", run.bind())).collect::<Vec<_>>()
    };
    let (sa, ca) = (args(&server.1), args(&client.1));
    let mut srv = Running::spawn(srv_pod, server.0, &sa.iter().map(String::as_str).collect::<Vec<_>>(), None)?;
    srv.wait_listening(srv_pod, port, START)?;
    let cli = run_in(cli_pod, client.0, &ca.iter().map(String::as_str).collect::<Vec<_>>(), None, TIMEOUT)?;
    let srv = srv.wait(if cli.code == Some(0) { TIMEOUT } else { AFTER_FAILURE });
    Ok(
        json!({"client": report(&cli), "server": srv.map_or_else(|e| json!({"did_not_end": format!("{e:#}")}), |o| report(&o))}),
    )
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn python_blocking(mode: &str, n: u32) -> impl Fn(&Run) -> Result<Value> + '_ {
    move |run| {
        let py = script("blocking_tcp.py").display().to_string();
        let n = n.to_string();
        client_server(
            run,
            7300,
            (PYTHON, strings(&[&py, "server", "{bind}7300", mode, &n])),
            (PYTHON, strings(&[&py, "client", "{server}:7300", mode, &n])),
        )
    }
}

/// Blocking request/response on one connection (300 exchanges of 1 B..64 KiB, answers
/// checked), as a thread-per-connection client and server do it.
#[test]
fn python_blocking_request_response_stays_plain_and_intact() {
    let expected = json!({
        "client": {"exit": 0, "errors": [], "exchanges_ok": 300, "stderr": ""},
        "server": {"exit": 0, "errors": [], "served": 1, "stderr": ""},
    });
    conforms(Class::Plain, &["server", "client"], expected, python_blocking("rr", 300));
}

/// 50 connections, one after another: send 2 MiB, `shutdown(SHUT_WR)`, then block in
/// `recv()` for the server's answer (it reads to EOF first). Redirected, that recv() is woken
/// when the FIN is acknowledged, before the answer exists: the repetition exercises it.
#[test]
fn python_blocking_half_close_then_blocking_recv_stays_plain_and_answered() {
    python_blocking_half_close(Family::V4);
}

#[test]
fn python_blocking_half_close_over_ipv6_stays_plain_and_answered() {
    python_blocking_half_close(Family::V6);
}

fn python_blocking_half_close(family: Family) {
    let expected = json!({
        "client": {"exit": 0, "errors": [], "intact": 50, "stderr": ""},
        "server": {"exit": 0, "errors": [], "stderr": ""},
    });
    conforms_over(family, Class::Plain, &["server", "client"], expected, python_blocking("halfclose", 50));
}

/// 8 connections at once, each with a thread writing 4 MiB and another reading the server's
/// echo of it from the same blocking socket.
#[test]
fn python_blocking_full_duplex_threads_stay_plain_and_intact() {
    let expected = json!({
        "client": {"exit": 0, "errors": [], "conns": ["intact"], "intact": 8, "stderr": ""},
        "server": {"exit": 0, "errors": [], "echoed": 8, "stderr": ""},
    });
    conforms(Class::Plain, &["server", "client"], expected, python_blocking("duplex", 8));
}

/// asyncio streams: 200 request/response exchanges, then 20 connections each writing 2 MiB,
/// half-closing with `write_eof()` and reading the server's answer to EOF.
#[test]
fn python_asyncio_streams_are_redirected_and_intact() {
    python_asyncio_streams(Family::V4);
}

#[test]
fn python_asyncio_streams_over_ipv6_are_redirected_and_intact() {
    python_asyncio_streams(Family::V6);
}

fn python_asyncio_streams(family: Family) {
    let expected = json!({
        "client": {"exit": 0, "errors": [], "exchanges_ok": 200, "intact": 20, "stderr": ""},
        "server": {"exit": 0, "errors": [], "exchanges": 200, "stderr": ""},
    });
    conforms_over(family, Class::Accelerated, &["server", "client"], expected, |run| {
        let py = script("asyncio_tcp.py").display().to_string();
        client_server(
            run,
            7301,
            (PYTHON, strings(&[&py, "server", "{bind}7301", "200", "20"])),
            (PYTHON, strings(&[&py, "client", "{server}:7301", "200", "20"])),
        )
    });
}

/// `nc -N -l` answering a 1 MiB file (and half-closing after it) while receiving a 2 MiB
/// one from `nc`, which closes once it has sent its file and read the answer's end; each
/// prints what it received. (A listening nc quits as soon as its peer's EOF is read and
/// its buffers are empty, even with its own input unread: were the client to half-close
/// after its file too, the answer could be cut at a 16 KiB boundary on plain TCP as well,
/// whenever the request finished first.)
#[test]
fn netcat_piping_files_both_ways_stays_plain_and_intact() {
    netcat_piping_files_both_ways(Family::V4);
}

#[test]
fn netcat_over_ipv6_piping_files_both_ways_stays_plain_and_intact() {
    netcat_piping_files_both_ways(Family::V6);
}

fn netcat_piping_files_both_ways(family: Family) {
    const REQUEST: usize = 2 << 20;
    const ANSWER: usize = 1 << 20;
    let expected = |(request, answer): (&str, &str)| {
        json!({
            "server": {"exit": 0, "stderr": "", "stdout_sha256": request, "stdout_bytes": REQUEST},
            "client": {"exit": 0, "stderr": "", "stdout_sha256": answer, "stdout_bytes": ANSWER},
        })
    };
    // The same files for both runs, so the checksums are known up front.
    let dir = TempDir::new("nc");
    let request = random_file(&dir.join("request"), REQUEST).unwrap();
    let answer = random_file(&dir.join("answer"), ANSWER).unwrap();
    let sums = (sha256(&request).unwrap(), sha256(&answer).unwrap());
    conforms_over(family, Class::Plain, &["server", "client"], expected((&sums.0, &sums.1)), |run| {
        let [srv_pod, cli_pod] = run.pods else { panic!("two pods") };
        // A listening nc takes IPv4 unless told otherwise.
        let listen: &[&str] = if family == Family::V6 { &["-6", "-N", "-l", "7302"] } else { &["-N", "-l", "7302"] };
        let mut srv = Running::spawn(srv_pod, "nc", listen, Some(&dir.join("answer")))?;
        srv.wait_listening(srv_pod, 7302, START)?;
        let ip = family.ip(srv_pod).to_string();
        let cli = run_in(cli_pod, "nc", &[&ip, "7302"], Some(&dir.join("request")), TIMEOUT)?;
        let srv = srv.wait(if cli.code == Some(0) { TIMEOUT } else { AFTER_FAILURE })?;
        Ok(json!({"server": seen(&srv), "client": seen(&cli)}))
    });
}

/// socat in its default (blocking) mode: `TCP-LISTEN` handing the connection to
/// `sha256sum`, a client sending 4 MiB from its stdin, half-closing at its end, and printing
/// the checksum it gets back.
#[test]
fn socat_default_blocking_mode_stays_plain_and_intact() {
    const BYTES: usize = 4 << 20;
    let dir = TempDir::new("socat");
    let data = random_file(&dir.join("data"), BYTES).unwrap();
    let sum = sha256(&data).unwrap();
    let expected = json!({
        "server": {"exit": 0, "stderr": ""},
        "client": {"exit": 0, "stderr": "", "stdout": format!("{sum}  -\n")},
    });
    conforms(Class::Plain, &["server", "client"], expected, |run| {
        let [srv_pod, cli_pod] = run.pods else { panic!("two pods") };
        let mut srv = Running::spawn(srv_pod, "socat", &["TCP-LISTEN:7303,reuseaddr", "SYSTEM:sha256sum"], None)?;
        srv.wait_listening(srv_pod, 7303, START)?;
        let to = format!("TCP:{}:7303", srv_pod.ip());
        // -t: after its input's EOF, wait up to 60 s (not 0.5 s) for the answer.
        let cli = run_in(cli_pod, "socat", &["-t", "60", "-", &to], Some(&dir.join("data")), TIMEOUT)?;
        let srv = srv.wait(if cli.code == Some(0) { TIMEOUT } else { AFTER_FAILURE })?;
        Ok(
            json!({"server": {"exit": srv.code, "stderr": srv.stderr}, "client": {"exit": cli.code, "stderr": cli.stderr, "stdout": cli.stdout_text()}}),
        )
    });
}

/// redis-server in the first pod, listening on 6379; stopped (SIGTERM) after `clients`.
fn with_redis(run: &Run, clients: impl FnOnce(&Pod, &str) -> Result<Value>) -> Result<Value> {
    let [srv_pod, cli_pod] = run.pods else { panic!("two pods") };
    let dir = run.dir.display().to_string();
    let args = [
        "--port",
        "6379",
        "--bind",
        "0.0.0.0",
        "--protected-mode",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir,
    ];
    let mut redis = Running::spawn(srv_pod, "redis-server", &args, None)?;
    redis.wait_listening(srv_pod, 6379, START)?;
    let mut v = clients(cli_pod, &srv_pod.ip().to_string())?;
    v["redis_server_exit"] = json!(redis.stop(TIMEOUT)?.code);
    Ok(v)
}

/// redis-cli SETs a 1 MiB value from its stdin, then GETs it back. redis-cli (hiredis)
/// connects non-blocking, so the connection pairs, then turns its socket blocking: meshaccel
/// sees that at its first send and pins it (docs/design.md): it stays redirected, since plain
/// bytes arriving at its blocked read would fail it with EAGAIN, and its server never moves
/// to plain towards it.
#[test]
fn redis_cli_set_and_get_of_a_1_mib_value_stay_redirected_and_intact() {
    const BYTES: usize = 1 << 20;
    let dir = TempDir::new("redis-cli");
    // Printable, so `--raw GET` prints it unchanged (then a newline).
    let mut value = random_file(&dir.join("raw"), BYTES / 2)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into_bytes();
    fs::write(dir.join("value"), &value).unwrap();
    value.push(b'\n');
    let got = json!({"exit": 0, "stderr": "", "stdout_sha256": sha256(&value).unwrap(), "stdout_bytes": BYTES + 1});
    let expected = json!({
        "set": {"exit": 0, "stderr": "", "stdout_sha256": sha256(b"OK\n").unwrap()},
        "get": got,
        "strlen": {"exit": 0, "stdout_sha256": sha256(format!("{BYTES}\n").as_bytes()).unwrap()},
        "redis_server_exit": 0,
    });
    conforms(Class::Accelerated, &["server", "client"], expected, |run| {
        with_redis(run, |cli_pod, ip| {
            let cli = |args: &[&str], stdin: Option<&Path>| -> Result<Value> {
                let all = [&["-h", ip], args].concat();
                Ok(seen(&run_in(cli_pod, "redis-cli", &all, stdin, TIMEOUT)?))
            };
            Ok(json!({
                "set": cli(&["-x", "SET", "big"], Some(&dir.join("value")))?,
                "get": cli(&["--raw", "GET", "big"], None)?,
                "strlen": cli(&["STRLEN", "big"], None)?,
            }))
        })
    });
}

/// `redis-benchmark -q -n 2000 -t set,get`: event-driven load connections. Rates differ run
/// to run; compared are the exit code, which tests completed, and what the server holds
/// afterwards (read with redis-cli, which is plain TCP).
#[test]
fn redis_benchmark_against_redis_server_is_redirected_and_complete() {
    let expected = json!({
        "benchmark": {"exit": 0, "tests": ["SET", "GET"]},
        "dbsize": "1\n",
        "value_length": "3\n",
        "redis_server_exit": 0,
    });
    conforms(Class::Accelerated, &["server", "client"], expected, |run| {
        with_redis(run, |cli_pod, ip| {
            let bench =
                run_in(cli_pod, "redis-benchmark", &["-h", ip, "-q", "-n", "2000", "-t", "set,get"], None, TIMEOUT)?;
            // -q prints "SET: 1234.56 requests per second, p50=…" per test, after \r progress lines.
            let text = bench.stdout_text();
            let tests: Vec<&str> = text
                .split(['\r', '\n'])
                .filter(|l| l.contains("requests per second"))
                .filter_map(|l| l.split(':').next())
                .map(str::trim)
                .collect();
            let cli = |args: &[&str]| -> Result<String> {
                Ok(run_in(cli_pod, "redis-cli", &[&["-h", ip], args].concat(), None, TIMEOUT)?.stdout_text())
            };
            Ok(json!({
                "benchmark": {"exit": bench.code, "tests": tests, "stderr": bench.stderr},
                // Without -r every SET writes the one key "key:__rand_int__", 3 random bytes.
                "dbsize": cli(&["DBSIZE"])?,
                "value_length": cli(&["STRLEN", "key:__rand_int__"])?,
            }))
        })
    });
}

const BLOB: usize = 4 << 20;

/// nginx in `pod` serving `www`, listening on 8080; returned running.
fn nginx(pod: &Pod, dir: &Path, www: &Path, family: Family) -> Result<Running> {
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log stderr;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    server {{ listen {}; root {}; }}
}}
",
            if family == Family::V6 { "[::]:8080" } else { "8080" },
            www.display()
        ),
    )?;
    let mut p =
        Running::spawn(pod, "nginx", &["-e", "stderr", "-p", &d.to_string(), "-c", conf.to_str().unwrap()], None)?;
    p.wait_listening(pod, 8080, START)?;
    Ok(p)
}

/// curl (in `pod`) fetching the blob twice over one kept-alive connection, then a missing
/// path with `-f` (its HTTP error, exit code and message).
fn curl(pod: &Pod, base: &str, dir: &Path) -> Result<Value> {
    let (a, b) = (dir.join("got-1"), dir.join("got-2"));
    let url = format!("{base}/blob");
    let args = [
        "-sS",
        "-w",
        "%{http_code} %{size_download} %{num_connects}\n",
        "-o",
        a.to_str().unwrap(),
        "-o",
        b.to_str().unwrap(),
        &url,
        &url,
    ];
    let fetch = run_in(pod, "curl", &args, None, TIMEOUT)?;
    let missing = run_in(pod, "curl", &["-sS", "-f", &format!("{base}/missing")], None, TIMEOUT)?;
    let sum = |p: &Path| fs::read(p).map_or_else(|e| e.to_string(), |d| sha256(&d).unwrap());
    Ok(json!({
        "fetch": {"exit": fetch.code, "stderr": fetch.stderr, "stdout": fetch.stdout_text(), "sha256": [sum(&a), sum(&b)]},
        "missing": {"exit": missing.code, "stderr": missing.stderr, "stdout": missing.stdout_text()},
    }))
}

fn curl_expectation(blob_sum: &str) -> Value {
    json!({
        "fetch": {"exit": 0, "stderr": "", "stdout": format!("200 {BLOB} 1\n200 {BLOB} 0\n"), "sha256": [blob_sum, blob_sum]},
        "missing": {"exit": 22, "stderr": "curl: (22) The requested URL returned error: 404\n"},
        "nginx_exit": 0,
    })
}

/// A directory for files both runs of a test use (the node's scratch directory is per
/// node, and each run has its own); removed on drop, also when the test fails.
struct TempDir(PathBuf);

impl TempDir {
    /// Private to one call: twins of a test run in parallel threads of one process.
    fn new(what: &str) -> Self {
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("meshaccel-conformance-{what}-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// curl fetching a 4 MiB file from nginx (sha256 compared), twice over one connection, and
/// a 404.
#[test]
fn curl_fetching_from_nginx_is_redirected_and_intact() {
    curl_fetching_from_nginx(Family::V4);
}

#[test]
fn curl_fetching_from_nginx_over_ipv6_is_redirected_and_intact() {
    curl_fetching_from_nginx(Family::V6);
}

fn curl_fetching_from_nginx(family: Family) {
    let www = TempDir::new("nginx-www");
    let blob = random_file(&www.join("blob"), BLOB).unwrap();
    let expected = curl_expectation(&sha256(&blob).unwrap());
    conforms_over(family, Class::Accelerated, &["server", "client"], expected, |run| {
        let [srv_pod, cli_pod] = run.pods else { panic!("two pods") };
        let web = nginx(srv_pod, &run.dir, &www, family)?;
        let mut v = curl(cli_pod, &format!("http://{}:8080", run.host(srv_pod)), &run.dir)?;
        v["nginx_exit"] = json!(web.stop(TIMEOUT)?.code);
        Ok(v)
    });
}

/// The same through haproxy as a TCP proxy in a third pod: curl → haproxy → nginx, two
/// connections, both event-driven at both ends.
#[test]
fn curl_through_haproxy_to_nginx_is_redirected_and_intact() {
    let www = TempDir::new("haproxy-www");
    let blob = random_file(&www.join("blob"), BLOB).unwrap();
    let mut expected = curl_expectation(&sha256(&blob).unwrap());
    // haproxy -db does not catch SIGTERM: it dies of it.
    expected["haproxy_signal"] = json!(libc::SIGTERM);
    conforms(Class::Accelerated, &["server", "proxy", "client"], expected, |run| {
        let [srv_pod, proxy_pod, cli_pod] = run.pods else { panic!("three pods") };
        let web = nginx(srv_pod, &run.dir, &www, Family::V4)?;
        let cfg = run.dir.join("haproxy.cfg");
        fs::write(
            &cfg,
            format!(
                "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
                 frontend fe\n    bind 0.0.0.0:8443\n    default_backend web\n\
                 backend web\n    server nginx {}:8080\n",
                srv_pod.ip()
            ),
        )?;
        let mut proxy = Running::spawn(proxy_pod, "haproxy", &["-db", "-f", cfg.to_str().unwrap()], None)?;
        proxy.wait_listening(proxy_pod, 8443, START)?;
        let mut v = curl(cli_pod, &format!("http://{}:8443", proxy_pod.ip()), &run.dir)?;
        // Its stderr (notices with pids and times) differs run to run: not compared.
        let proxy = proxy.stop(TIMEOUT)?;
        v["haproxy_exit"] = json!(proxy.code);
        v["haproxy_signal"] = json!(proxy.signal);
        v["nginx_exit"] = json!(web.stop(TIMEOUT)?.code);
        Ok(v)
    });
}

fn java_echo(style: &str) -> impl Fn(&Run) -> Result<Value> + '_ {
    move |run| {
        let src = script("Echo.java").display().to_string();
        client_server(
            run,
            7304,
            ("java", strings(&[&src, &format!("{style}-server"), "7304", "8"])),
            ("java", strings(&[&src, &format!("{style}-client"), "{server}:7304", "8", "1048576"])),
        )
    }
}

fn java_expectation() -> Value {
    json!({
        "client": {"exit": 0, "errors": [], "conns": ["intact"], "stderr": ""},
        "server": {"exit": 0, "errors": [], "echoed_bytes": 8 << 20, "stderr": ""},
    })
}

/// Java NIO: a Selector echo server and a Selector client with 8 connections of 1 MiB each
/// way, half-closing at the end, run with JDK 17's single-file launcher.
#[test]
fn java_nio_echo_is_redirected_and_intact() {
    conforms(Class::Accelerated, &["server", "client"], java_expectation(), java_echo("nio"));
}

/// The same echo with `java.net.Socket`: thread per connection on the server, a reading and
/// a writing thread per connection on the client.
#[test]
fn java_blocking_socket_echo_stays_plain_and_intact() {
    conforms(Class::Plain, &["server", "client"], java_expectation(), java_echo("blocking"));
}
