//! `meshaccel-testkit`: runs processes inside test pods and makes test traffic.
//!
//! ```text
//! meshaccel-testkit exec --netns PATH --cgroup DIR -- CMD [ARGS…]
//! meshaccel-testkit serve  --listen ADDR --mode echo|sink|halfclose|rst  [options]
//! meshaccel-testkit client --connect ADDR --mode verify|send|halfclose|rst [options]
//! meshaccel-testkit many   --role server|client|loopback --conns N [options]
//! ```
//! Traffic commands print JSON lines on stdout: progress events (`{"event": "listening"}`,
//! …) and finally `{"event": "done", …, "errors": […]}`; they read commands (`go`) on stdin.
mod args;
mod exec;
mod many;
mod traffic;

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.first().map(String::as_str) {
        Some("exec") => exec::main(&argv[1..]),
        Some("serve") => args::Args::parse(&argv[1..]).and_then(|a| traffic::serve(&a)),
        Some("client") => args::Args::parse(&argv[1..]).and_then(|a| traffic::client(&a)),
        Some("many") => args::Args::parse(&argv[1..]).and_then(|a| many::main(&a)),
        _ => Err(anyhow::anyhow!("usage: meshaccel-testkit exec|serve|client|many … (see the source)")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshaccel-testkit: {e:#}");
            ExitCode::FAILURE
        }
    }
}
