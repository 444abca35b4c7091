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
//! `meshaccel-testkit COMMAND --help` lists each command's options.
mod exec;
mod many;
mod traffic;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "meshaccel-testkit", about = "Runs processes inside test pods and makes test traffic")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Join a pod's cgroup and netns, then exec a command there.
    Exec(exec::Exec),
    /// Accept connections and serve them in one of the server modes.
    Serve(traffic::Serve),
    /// Open connections and drive them in one of the client modes.
    Client(traffic::Client),
    /// Many concurrent connections in one epoll loop (the scale tests).
    Many(many::Many),
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Exec(a) => exec::main(&a),
        Cmd::Serve(a) => traffic::serve(&a),
        Cmd::Client(a) => traffic::client(&a),
        Cmd::Many(a) => many::main(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshaccel-testkit: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("meshaccel-testkit").chain(line.split_whitespace()))
    }

    #[test]
    fn command_lines_of_the_tests_parse() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        for ok in [
            "exec --netns /run/netns/p --cgroup /sys/fs/cgroup/p -- /bin/prog --listen 1.2.3.4:5 -x",
            "serve --listen 0.0.0.0:7000 --mode echo --conns 4 --expect-tags 7000..7003 --io poll",
            "serve --listen 0.0.0.0:7000 --mode sink --seed 9 --wait-go --io blocking",
            "serve --listen 0.0.0.0:7100 --mode rst --bytes 65536 --seed 5 --ack-after 65536 --io poll --delay-ms 300",
            "client --connect 10.0.0.2:7000 --mode verify --conns 4 --bytes 1048576 --tag-base 900 --bind-port 40000 --wait-go --io poll",
            "client --connect 10.0.0.2:7000 --mode send --bytes 8388608 --seed 9 --stall-ms 500 --write-size 16 --io poll",
            "many --role server --conns 10 --listen 0.0.0.0:9000 --ports 4 --timeout-ms 1000",
            "many --role client --conns 10 --connect 10.0.0.2:9000",
            "many --role loopback --conns 10 --port 9000",
        ] {
            parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "exec --netns /n --cgroup /c /bin/prog",
            "exec --netns /n --cgroup /c --",
            "serve --listen 0.0.0.0:7000 --mode verify",
            "serve --listen 0.0.0.0:7000 --mode echo --expect-tags 7",
            "client --connect 10.0.0.2:7000 --mode send --io epoll",
            "client --connect 10.0.0.2:7000 --mode send --bogus",
            "many --role server --conns 10",
            "many --role client --conns 10 --listen 0.0.0.0:9000",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
