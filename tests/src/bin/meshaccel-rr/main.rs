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
#[path = "../meshaccel-testkit/args.rs"]
mod args;
mod echo;
mod io;
mod rr;

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = argv.split_first().map_or(("", &[][..]), |(c, r)| (c.as_str(), r));
    let result = args::Args::parse(rest).and_then(|a| match cmd {
        "echo" => echo::serve(&a),
        "rr" => rr::client(&a),
        _ => Err(anyhow::anyhow!("usage: meshaccel-rr echo|rr … (see the source)")),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshaccel-rr: {e:#}");
            ExitCode::FAILURE
        }
    }
}
