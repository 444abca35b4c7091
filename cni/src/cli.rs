//! `meshaccel <verb>` when run by a person rather than a container runtime.
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use meshaccel_node::bpf;
use meshaccel_node::conf::DEFAULT_STATE_DIR;
use meshaccel_node::pins::{Pins, DEFAULT_ROOT};
use meshaccel_node::sockmap;
use serde_json::{json, Map, Value};


const USAGE: &str = "usage: meshaccel version
       meshaccel stats  [--json] [--bpffs-root DIR]
       meshaccel status [--json] [--bpffs-root DIR] [--state-dir DIR]
       meshaccel doctor [--json] [--bpffs-root DIR] [--state-dir DIR] [--probe [--peer IP:PORT]… [--timeout-ms N]]
       meshaccel doctor --syn-check ADDR:PORT [--timeout SECS] [--json]
                        (does SMC's TCP option reach ADDR:PORT and come back? no SMC handshake)
       meshaccel rdma-responder --listen IP:PORT [--timeout-ms N] [--max-conns N] [--log-level L]
       meshaccel smc-stats [--json]   (SMC counters of the caller's netns)
       meshaccel smc-uninstall [--state-dir DIR] [--json]
                        (removes the node's UEIDs meshaccel added; run by meshaccel-installer uninstall)
Run by a container runtime (CNI_COMMAND set), meshaccel is a chained CNI plugin.";

struct Opts {
    json: bool,
    root: PathBuf,
    state_dir: PathBuf,
    syn_check: Option<String>,
    timeout: Duration,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        json: false,
        root: DEFAULT_ROOT.into(),
        state_dir: DEFAULT_STATE_DIR.into(),
        syn_check: None,
        timeout: Duration::from_secs(3),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => o.json = true,
            "--bpffs-root" => o.root = it.next().context("--bpffs-root needs a value")?.into(),
            "--state-dir" => o.state_dir = it.next().context("--state-dir needs a value")?.into(),
            "--syn-check" => o.syn_check = Some(it.next().context("--syn-check needs ADDR:PORT")?.clone()),
            "--timeout" => {
                let v = it.next().context("--timeout needs seconds")?;
                o.timeout = Duration::try_from_secs_f64(v.parse().with_context(|| format!("--timeout {v}"))?)
                    .ok()
                    .filter(|t| !t.is_zero())
                    .with_context(|| format!("--timeout {v}: want seconds > 0"))?;
            }
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    Ok(o)
}

fn print(o: &Opts, v: Value) {
    if o.json {
        println!("{v}");
    } else {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    }
}

fn syn_check(o: &Opts, target: &str) -> Result<()> {
    let addr: SocketAddr = target
        .to_socket_addrs()
        .with_context(|| format!("--syn-check {target}: want ADDR:PORT"))?
        .next()
        .with_context(|| format!("--syn-check {target}: no address"))?;
    let report = meshaccel_smc::syncheck::probe(addr, o.timeout)?;
    let ok = report.ok;
    print(o, serde_json::to_value(report)?);
    if ok { Ok(()) } else { bail!("the SMC option did not come back from {addr} (see the report)") }
}

pub fn main(args: &[String]) -> Result<()> {
    let Some((verb, rest)) = args.split_first() else { bail!("{USAGE}") };
    match verb.as_str() {
        "version" | "--version" => {
            println!("meshaccel {} (CNI 0.3.0–1.1.0)", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        "stats" => {
            let o = parse(rest)?;
            let counters = bpf::read_counters(&Pins::new(&o.root))
                .with_context(|| format!("read counters under {} (are the programs loaded?)", o.root.display()))?;
            let m: Map<String, Value> = counters.into_iter().map(|(c, n)| (c.name().to_string(), json!(n))).collect();
            print(&o, Value::Object(m));
            Ok(())
        }
        "status" => {
            let o = parse(rest)?;
            let pins = Pins::new(&o.root);
            let pods: Vec<Value> = sockmap::records(&o.state_dir)
                .list()?
                .into_iter()
                .map(|(id, st)| {
                    let linked = bpf::pod_link(&pins, &id).ok().flatten().is_some();
                    json!({"attachment": id.as_str(), "linked": linked, "state": st})
                })
                .collect();
            let smc: Vec<Value> = meshaccel_smc::record::records(&o.state_dir)
                .list()?
                .into_iter()
                .map(|(id, r)| json!({"attachment": id.as_str(), "smc": true, "mode": r.state.mode, "record": r}))
                .collect();
            let (loaded, accounting) = (bpf::is_loaded(&pins), bpf::backpressure_accounting(&pins));
            print(&o, json!({
                "bpffsRoot": o.root,
                "loaded": loaded,
                // false: the kernel refused the fexit accounting; redirected backlogs are unbounded.
                "backpressureAccounting": accounting,
                "backpressureAccountingError": (loaded && !accounting).then(bpf::accounting_unavailable_reason).flatten(),
                "attachments": pods,
                "smc": smc,
                "rdmaReachability": meshaccel_smc::reach::report(&o.state_dir),
            }));
            Ok(())
        }
        "doctor" => {
            let (probe, rest) = meshaccel_smc::report::take_probe_args(rest)?;
            let o = parse(&rest)?;
            if let Some(target) = &o.syn_check {
                return syn_check(&o, target);
            }
            let report = meshaccel_smc::report::doctor(&o.root, &o.state_dir, probe.as_ref());
            let ok = report["ok"] == json!(true);
            print(&o, report);
            if ok { Ok(()) } else { bail!("node is not ready for SMC-R (see the report)") }
        }
        "rdma-responder" => meshaccel_smc::responder::main(rest),
        "smc-stats" => {
            let o = parse(rest)?;
            print(&o, meshaccel_smc::report::stats()?);
            Ok(())
        }
        "smc-uninstall" => {
            let o = parse(rest)?;
            print(&o, serde_json::to_value(meshaccel_smc::ueid::uninstall(&o.state_dir)?)?);
            Ok(())
        }
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}
