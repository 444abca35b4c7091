//! meshaccel: a chained CNI plugin that accelerates pod TCP (see README.md).
//!
//! A thin binary: the verbs are wired in `commands`, the features and everything shared
//! with the installer live in the `meshaccel-node` and `meshaccel-smc` crates.
mod cli;
mod commands;
mod config;

use std::io::Write;
use std::panic::{self, AssertUnwindSafe};

use rscni_plugin::cni::Plugin;
use rscni_plugin::error::Error;
use rscni_plugin::types::ErrorResult;
use rscni_plugin::version::SpecVersion;

/// CNI error code for a bug in the plugin (the spec's "unknown error" is 999 in libcni).
const PANIC_CODE: u32 = 999;

fn main() {
    if std::env::var_os("CNI_COMMAND").is_none() {
        if let Err(e) = cli::main(std::env::args_os()) {
            eprintln!("meshaccel: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    // A panic must still answer the runtime with a CNI error on stdout, not a bare exit.
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        Plugin::default().msg(concat!("meshaccel ", env!("CARGO_PKG_VERSION"))).run(&commands::Meshaccel)
    }));
    match outcome {
        Ok(Ok(())) => {}
        // rscni has already written the error result to stdout.
        Ok(Err(_)) => std::process::exit(1),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let err = Error::Custom(PANIC_CODE, "meshaccel: internal error".into(), what);
            let out = serde_json::to_string(&ErrorResult::new(SpecVersion::CURRENT, &err)).unwrap_or_default();
            let _ = writeln!(std::io::stdout(), "{out}");
            std::process::exit(1);
        }
    }
}
