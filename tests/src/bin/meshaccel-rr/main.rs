//! `meshaccel-rr`: tagged request/response traffic for the mesh tests and the mesh
//! benchmark (`meshaccel-bench mesh`), run inside pods.
//!
//! ```text
//! meshaccel-rr echo --listen ADDR [--expect-prefixes P,Q,…]
//! meshaccel-rr rr   --connect ADDR --tag-prefix P [--conns N] [--size BYTES]
//!                   [--requests N | --seconds N] [--reconnect]
//! ```
//! Both print JSON lines like `meshaccel-testkit`: `{"event": "listening"}`, and finally
//! `{"event": "done", …, "errors": […]}` (`echo` when its stdin says `stop` or closes).
//!
//! Every request is made of 8-byte records, each the connection's tag (`prefix << 32 | n`,
//! `n` unique per connection in one `rr` process): the echo server checks that a connection
//! carries one tag only, from an expected prefix, and the client that every answer is its own
//! request, so a byte delivered into a socket it was not sent to is found on either side.
mod echo;
mod io;
mod rr;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "meshaccel-rr", about = "Tagged request/response traffic for the mesh tests and benchmark")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Echo server: checks that every connection carries one tag of an expected prefix.
    Echo(echo::Echo),
    /// Request/response client: QPS and latency percentiles, every wrong answer counted.
    Rr(rr::Rr),
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Echo(a) => echo::serve(&a),
        Cmd::Rr(a) => rr::client(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshaccel-rr: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("meshaccel-rr").chain(line.split_whitespace()))
    }

    #[test]
    fn command_lines_of_the_tests_parse() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let Cmd::Echo(e) = parse("echo --listen 0.0.0.0:7000 --expect-prefixes 1,2,41").unwrap().cmd else { panic!() };
        assert_eq!(e.expect_prefixes, [1, 2, 41]);
        for ok in [
            "echo --listen 0.0.0.0:7000",
            "rr --connect 10.0.0.2:7000 --tag-prefix 41 --conns 4 --requests 100 --reconnect",
            "rr --connect 10.0.0.2:7000 --tag-prefix 1 --conns 64 --seconds 3 --size 1024",
        ] {
            parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "echo",
            "echo --listen 0.0.0.0:7000 --expect-prefixes a",
            "rr --connect 10.0.0.2:7000",
            "rr --tag-prefix 1",
            "bogus",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
