//! `meshaccel <verb>` when run by a person rather than a container runtime. Only reached with
//! CNI_COMMAND unset (main.rs), so the plugin's ADD/DEL never run this parser.
use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use meshaccel_node::bpf;
use meshaccel_node::conf::DEFAULT_STATE_DIR;
use meshaccel_node::pins::{Pins, DEFAULT_ROOT};
use meshaccel_node::sockmap;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use serde_json::{json, Map, Value};

use meshaccel_smc::report::ProbeArgs;
use meshaccel_smc::responder;

const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (CNI 0.3.0–1.1.0)");

#[derive(Parser, Debug)]
#[command(
    name = "meshaccel",
    version = VERSION,
    about = "meshaccel on this node: counters, status, SMC-R checks, the RDMA probe responder",
    after_help = "Run by a container runtime (CNI_COMMAND set), meshaccel is a chained CNI plugin.",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand, Debug)]
enum Verb {
    /// Print the plugin's version and the CNI versions it speaks.
    Version,
    /// The sockmap datapath's counters, summed over CPUs.
    Stats {
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        root: BpffsRoot,
    },
    /// Programs loaded, per-pod attachments, backpressure accounting, SMC records, RDMA
    /// reachability.
    Status {
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        root: BpffsRoot,
        #[command(flatten)]
        state: StateDirArg,
    },
    /// Can this node (and the caller's netns) do SMC-R, and how; exits 1 when it cannot.
    Doctor(Doctor),
    /// The other end of the RDMA reachability probe (run on every node by the DaemonSet).
    RdmaResponder(responder::Options),
    /// SMC counters and fallback reasons of the caller's netns.
    SmcStats {
        #[command(flatten)]
        out: Output,
    },
    /// Remove the node's UEIDs meshaccel added (what `meshaccel-installer uninstall` does for SMC).
    SmcUninstall {
        #[command(flatten)]
        state: StateDirArg,
        #[command(flatten)]
        out: Output,
    },
}

/// `--json`: one line; otherwise pretty-printed JSON.
#[derive(Args, Debug)]
struct Output {
    /// Print the report as one line of JSON (default: indented).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct BpffsRoot {
    /// Where the programs and maps are pinned.
    #[arg(long = "bpffs-root", value_name = "DIR", default_value = DEFAULT_ROOT)]
    root: PathBuf,
}

#[derive(Args, Debug)]
struct StateDirArg {
    /// The plugin's state directory (its `stateDir`).
    #[arg(long = "state-dir", value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

#[derive(Args, Debug)]
struct Doctor {
    #[command(flatten)]
    out: Output,
    #[command(flatten)]
    root: BpffsRoot,
    #[command(flatten)]
    state: StateDirArg,
    #[command(flatten)]
    probe: ProbeArgs,
    /// Instead: does SMC's TCP option reach ADDR:PORT and come back? (no SMC handshake)
    #[arg(long = "syn-check", value_name = "ADDR:PORT")]
    syn_check: Option<String>,
    /// How long --syn-check waits for an answer.
    #[arg(long, value_name = "SECS", default_value = "3", value_parser = seconds)]
    timeout: Duration,
}

/// Seconds, fractions allowed, more than zero.
fn seconds(v: &str) -> Result<Duration, String> {
    let secs: f64 = v.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(secs).ok().filter(|t| !t.is_zero()).ok_or_else(|| "want seconds > 0".into())
}

impl Output {
    fn print(&self, v: Value) {
        if self.json {
            println!("{v}");
        } else {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
    }
}

fn syn_check(out: &Output, target: &str, timeout: Duration) -> Result<()> {
    let addr: SocketAddr = target
        .to_socket_addrs()
        .with_context(|| format!("--syn-check {target}: want ADDR:PORT"))?
        .next()
        .with_context(|| format!("--syn-check {target}: no address"))?;
    let report = meshaccel_smc::syncheck::probe(addr, timeout)?;
    let ok = report.ok;
    out.print(serde_json::to_value(report)?);
    if ok {
        Ok(())
    } else {
        bail!("the SMC option did not come back from {addr} (see the report)")
    }
}

/// Parses `argv` (program name first). A usage error, `--help` and `--version` end the
/// process here (exit 2, 0, 0); an error of the verb itself is returned.
pub fn main(argv: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> Result<()> {
    match Cli::parse_from(argv).verb {
        Verb::Version => {
            println!("meshaccel {VERSION}");
            Ok(())
        }
        Verb::Stats { out, root: BpffsRoot { root } } => {
            let counters = bpf::read_counters(&Pins::new(&root))
                .with_context(|| format!("read counters under {} (are the programs loaded?)", root.display()))?;
            let m: Map<String, Value> = counters.into_iter().map(|(c, n)| (c.name().to_string(), json!(n))).collect();
            out.print(Value::Object(m));
            Ok(())
        }
        Verb::Status { out, root: BpffsRoot { root }, state: StateDirArg { state_dir } } => {
            let pins = Pins::new(&root);
            let pods: Vec<Value> = sockmap::records(&state_dir)
                .list()?
                .into_iter()
                .map(|(id, st)| {
                    let linked = bpf::pod_link(&pins, &id).ok().flatten().is_some();
                    json!({"attachment": id.as_str(), "linked": linked, "state": st})
                })
                .collect();
            // A suspended pod keeps its SMC setup; its new sockets are plain TCP until the gate opens.
            let gate = meshaccel_smc::gate::report(&state_dir, &root);
            let smc_state = gate["state"].clone();
            let smc: Vec<Value> = meshaccel_smc::record::records(&state_dir)
                .list()?
                .into_iter()
                .map(|(id, r)| {
                    json!({"attachment": id.as_str(), "smc": true, "gate": smc_state, "mode": r.state.mode, "record": r})
                })
                .collect();
            let (loaded, accounting) = (bpf::is_loaded(&pins), bpf::backpressure_accounting(&pins));
            out.print(json!({
                "bpffsRoot": root,
                "loaded": loaded,
                // false: the kernel refused the fexit accounting; redirected backlogs are unbounded.
                "backpressureAccounting": accounting,
                "backpressureAccountingError": (loaded && !accounting).then(bpf::accounting_unavailable_reason).flatten(),
                "attachments": pods,
                "smc": smc,
                "rdmaReachability": meshaccel_smc::reach::report(&state_dir),
                "smcGate": gate,
            }));
            Ok(())
        }
        Verb::Doctor(d) => {
            if let Some(target) = &d.syn_check {
                return syn_check(&d.out, target, d.timeout);
            }
            let report = meshaccel_smc::report::doctor(&d.root.root, &d.state.state_dir, d.probe.requested().as_ref());
            let ok = report["ok"] == json!(true);
            d.out.print(report);
            if ok {
                Ok(())
            } else {
                bail!("node is not ready for SMC-R (see the report)")
            }
        }
        Verb::RdmaResponder(opts) => {
            exit_on_termination()?;
            responder::main(opts)
        }
        Verb::SmcStats { out } => {
            out.print(meshaccel_smc::report::stats()?);
            Ok(())
        }
        Verb::SmcUninstall { state: StateDirArg { state_dir }, out } => {
            out.print(serde_json::to_value(meshaccel_smc::ueid::uninstall(&state_dir)?)?);
            Ok(())
        }
    }
}

/// SIGTERM and SIGINT end the process at once, with status 0. The responder is its
/// container's PID 1, for which the kernel ignores signals without a handler: without this
/// every pod deletion waited out the grace period and ended in SIGKILL. It keeps no state a
/// probe from another node would miss (an interrupted probe fails and is retried).
fn exit_on_termination() -> Result<()> {
    extern "C" fn exit_now(_: libc::c_int) {
        // SAFETY: _exit is async-signal-safe and touches no state of the interrupted code.
        unsafe { libc::_exit(0) }
    }
    let action = SigAction::new(SigHandler::Handler(exit_now), SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only calls _exit (above).
        unsafe { sigaction(sig, &action) }.with_context(|| format!("handle {sig}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("meshaccel").chain(line.split_whitespace()))
    }

    #[test]
    fn definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_flags() {
        let Verb::Status { out, root, state } = parse("status").unwrap().verb else { panic!() };
        assert!(!out.json);
        assert_eq!((root.root, state.state_dir), (PathBuf::from(DEFAULT_ROOT), PathBuf::from(DEFAULT_STATE_DIR)));
        let Verb::Doctor(d) = parse("doctor --json --state-dir /s --bpffs-root /b").unwrap().verb else { panic!() };
        assert!(d.out.json && d.syn_check.is_none() && d.probe.requested().is_none());
        assert_eq!((d.root.root, d.state.state_dir, d.timeout), ("/b".into(), "/s".into(), Duration::from_secs(3)));
        let Verb::Doctor(d) = parse("doctor --syn-check 10.0.0.1:80 --timeout 1.5").unwrap().verb else { panic!() };
        assert_eq!((d.syn_check.as_deref(), d.timeout), (Some("10.0.0.1:80"), Duration::from_millis(1500)));
        let Verb::SmcUninstall { state, out } = parse("smc-uninstall --json --state-dir /s").unwrap().verb else {
            panic!()
        };
        assert!(out.json && state.state_dir == std::path::Path::new("/s"));
    }

    #[test]
    fn usage_errors() {
        for (line, kind) in [
            ("stats --bogus", ErrorKind::UnknownArgument),
            ("frobnicate", ErrorKind::InvalidSubcommand),
            ("doctor --timeout 0", ErrorKind::ValueValidation),
            ("doctor --timeout=-1", ErrorKind::ValueValidation),
            ("doctor --timeout x", ErrorKind::ValueValidation),
            ("doctor --syn-check", ErrorKind::InvalidValue),
            ("doctor --peer 10.0.0.1:7471", ErrorKind::MissingRequiredArgument),
            ("doctor --timeout-ms 500", ErrorKind::MissingRequiredArgument),
            ("doctor --probe --peer 10.0.0.1", ErrorKind::ValueValidation),
            // Each verb takes its own options only.
            ("smc-stats --state-dir /s", ErrorKind::UnknownArgument),
            ("", ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand),
        ] {
            assert_eq!(parse(line).map(|c| format!("{c:?}")).map_err(|e| e.kind()), Err(kind), "{line:?}");
        }
        assert_eq!(parse("--help").unwrap_err().kind(), ErrorKind::DisplayHelp);
        assert_eq!(parse("--version").unwrap_err().kind(), ErrorKind::DisplayVersion);
        assert_eq!(parse("help doctor").unwrap_err().kind(), ErrorKind::DisplayHelp);
    }
}
