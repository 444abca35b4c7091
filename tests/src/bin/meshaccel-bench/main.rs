//! `meshaccel-bench`: same-node TCP plain vs accelerated, through the real CNI chain.
//!
//! ```text
//! meshaccel-bench [run] [--quick] [--reps N] [--sizes 16,64,1K,…] [--secs N] [--pods N]
//!                       [--out DIR] [--pin | --no-pin]
//! meshaccel-bench conn-server (--listen ADDR | --unix PATH) [--cpu N]     (inside a pod)
//! meshaccel-bench conn-client (--connect ADDR | --unix PATH) --secs N [--cpu N]
//! meshaccel-bench mesh [--seconds N] [--rounds N] [--conns N] [--json PATH]   (docs/mesh.md)
//! meshaccel-bench cni [--pods N]       (CNI ADD/DEL latency and plugin/installer memory only)
//! ```
//! `run` sets up a node (bridge + host-local + meshaccel), two accelerated pods and two pods
//! opted out by annotation (identical veth/bridge paths), and measures, interleaved and
//! repeated: sockperf ping-pong latency and stream bandwidth per message size, connection
//! rate (connect + 1 B each way + close), all with non-blocking sockets in epoll loops, each
//! pod↔pod and over loopback inside one pod, plus an AF_UNIX reference measured the same way;
//! then CNI ADD/DEL latency per plugin over `--pods` pods. It prints a Markdown table and
//! writes it, a JSON file with every sample and an SVG heatmap to `--out`. See
//! docs/benchmark.md.
#[path = "../meshaccel-testkit/args.rs"]
mod args;
mod child;
mod cni_latency;
mod connrate;
mod heatmap;
mod machine;
mod matrix;
mod mesh;
mod opts;
mod overhead;
mod reference;
mod report;
mod run;
mod sockperf;
mod stats;

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match argv.split_first() {
        Some((c, r)) if !c.starts_with("--") => (c.as_str(), r),
        _ => ("run", &argv[..]),
    };
    let result = args::Args::parse(rest).and_then(|a| match cmd {
        "run" => opts::Opts::parse(&a).and_then(|o| run::run(&o)),
        "conn-server" => connrate::serve(&a),
        "conn-client" => connrate::client(&a),
        "mesh" => mesh::run(&a),
        "cni" => cni_latency::run(&a),
        _ => Err(anyhow::anyhow!("usage: meshaccel-bench [run|conn-server|conn-client|mesh|cni] … (see the source)")),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshaccel-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
