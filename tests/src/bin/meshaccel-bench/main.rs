//! `meshaccel-bench`: same-node TCP plain vs accelerated, through the real CNI chain.
//!
//! ```text
//! meshaccel-bench [run] [--quick] [--reps N] [--sizes 16,64,1K,…] [--secs N] [--pods N]
//!                       [--out DIR] [--pin | --no-pin]         (`COMMAND --help`: its options)
//! meshaccel-bench conn-server (--listen ADDR | --unix PATH) [--cpu N]     (inside a pod)
//! meshaccel-bench conn-client (--connect ADDR | --unix PATH) --secs N [--cpu N]
//! meshaccel-bench perf-server --listen ADDR [--cpu N]                     (inside a pod)
//! meshaccel-bench perf-client --connect ADDR --test ping-pong|stream --size N --secs N [--cpu N]
//! meshaccel-bench mesh [--seconds N] [--rounds N] [--conns N] [--json PATH]   (docs/mesh.md)
//! meshaccel-bench cni [--pods N]       (CNI ADD/DEL latency and plugin/installer memory only)
//! ```
//! `run` sets up a node (bridge + host-local + meshaccel), two accelerated pods and two pods
//! opted out by annotation (identical veth/bridge paths), and measures, interleaved and
//! repeated: sockperf ping-pong latency and stream bandwidth per message size, connection
//! rate (connect + 1 B each way + close), all with non-blocking sockets in epoll loops, each
//! pod↔pod and over loopback inside one pod, over IPv4 and over IPv6 (dual-stack pods; `::1`;
//! ping-pong and stream by `perf-client`, sockperf having no IPv6), plus an AF_UNIX reference
//! measured the same way;
//! then CNI ADD/DEL latency per plugin over `--pods` pods. It prints a Markdown table and
//! writes it, a JSON file with every sample and an SVG heatmap to `--out`. See
//! docs/benchmark.md.
mod child;
mod cni_latency;
mod connrate;
mod heatmap;
mod machine;
mod matrix;
mod mesh;
mod opts;
mod overhead;
mod perf;
mod reference;
mod report;
mod run;
mod sockperf;
mod stats;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "meshaccel-bench",
    about = "Same-node TCP plain vs accelerated, through the real CNI chain (docs/benchmark.md)",
    subcommand_value_name = "COMMAND",
    subcommand_help_heading = "Commands (default: run)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// `run`'s options, when no command is given.
    #[command(flatten)]
    run: opts::RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The whole benchmark: the matrix, the AF_UNIX reference, CNI ADD/DEL latency; needs root.
    Run(opts::RunArgs),
    /// Connection-rate server (inside a pod); prints `listening`, serves until killed.
    ConnServer(connrate::ServerArgs),
    /// Connection-rate client: connections for --secs, then a `done` line.
    ConnClient(connrate::ClientArgs),
    /// Ping-pong/stream server over TCP (inside a pod; the IPv6 rows); serves until killed.
    PerfServer(perf::ServerArgs),
    /// Ping-pong/stream client: one connection for --secs, then a `done` line.
    PerfClient(perf::ClientArgs),
    /// Sidecar mesh: plain vs accelerated meshed pod pairs, HTTP and TCP echo (docs/mesh.md).
    Mesh(mesh::MeshArgs),
    /// Only the CNI ADD/DEL latency and the plugin's and installer's memory.
    Cni(cni_latency::Pods),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        None => run::run(&opts::Opts::new(cli.run)),
        Some(Cmd::Run(a)) => run::run(&opts::Opts::new(a)),
        Some(Cmd::ConnServer(a)) => connrate::serve(&a),
        Some(Cmd::ConnClient(a)) => connrate::client(&a),
        Some(Cmd::PerfServer(a)) => perf::serve(&a),
        Some(Cmd::PerfClient(a)) => perf::client(&a),
        Some(Cmd::Mesh(a)) => mesh::run(&a),
        Some(Cmd::Cni(a)) => cni_latency::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshaccel-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("meshaccel-bench").chain(line.split_whitespace()))
    }

    #[test]
    fn command_lines_parse() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        for ok in [
            "",
            "--quick",
            "--sizes 64 --reps 1 --pods 3 --out /tmp/x",
            "run --out target/x --quick --pin",
            "run --sizes 16,1K,4KiB --secs 2 --no-pin",
            "conn-server --listen 0.0.0.0:7400 --cpu 1",
            "conn-server --unix /tmp/c.sock",
            "conn-client --connect 10.0.0.2:7400 --secs 1 --cpu 0",
            "conn-client --unix /tmp/c.sock --secs 1",
            "perf-server --listen [::]:11112 --cpu 1",
            "perf-client --connect [fd00::2]:11112 --test ping-pong --size 16 --secs 1",
            "perf-client --connect 10.0.0.2:11112 --test stream --size 65507 --secs 2 --cpu 0",
            "mesh --seconds 1 --rounds 1 --conns 4 --json /tmp/m.json",
            "cni --pods 20",
        ] {
            parse(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in [
            "run --bogus",
            "run --pin --no-pin",
            "run --reps 0",
            "run --secs 0",
            "run --sizes 1",
            "--quick run",
            "conn-server",
            "conn-server --listen 0.0.0.0:7400 --unix /tmp/c.sock",
            "conn-client --connect 10.0.0.2:7400",
            "perf-client --connect [::1]:11112 --test stream --size 13 --secs 1",
            "perf-client --connect [::1]:11112 --test bulk --size 64 --secs 1",
            "perf-server",
            "mesh --json",
            "cni --pods x",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        // --help of a command prints its help; it never starts the command.
        for help in ["--help", "run --help", "run -h", "help run", "cni --help"] {
            assert_eq!(parse(help).unwrap_err().kind(), clap::error::ErrorKind::DisplayHelp, "{help}");
        }
    }
}
