//! meshaccel-installer: the node daemon of the meshaccel DaemonSet (see docs/installer.md).
mod binaries;
mod config;
mod daemon;
mod http;
mod plugin_logs;
mod preflight;
mod smc_follow;
mod status;
mod watch;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Verb {
    /// Install, adopt running pods, keep the install correct; on SIGTERM remove the chain
    /// entry (pins stay, so running pods stay accelerated).
    Run,
    /// One install pass, then exit.
    Install,
    /// Remove everything: chain entry, plugin binary, pins, per-pod links, records, the SMC
    /// UEIDs meshaccel added (per-pod SMC records stay for the pods' DEL).
    Uninstall,
    /// Print the effective settings and the conflist entry as JSON, then exit.
    Config,
}

#[derive(Parser, Debug)]
#[command(
    name = "meshaccel-installer",
    version,
    args_override_self = true,
    about = "Chains the meshaccel CNI plugin into the node's primary CNI and keeps it there"
)]
struct Cli {
    #[arg(value_enum, default_value = "run")]
    verb: Verb,
    /// Config file (YAML or JSON); flags and environment variables override it.
    #[arg(long, env = "MESHACCEL_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    layer: config::Layer,
}

fn main() {
    let cli = Cli::parse();
    let cfg = match config::Config::resolve(cli.layer, cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("meshaccel-installer: {e:#}");
            std::process::exit(2);
        }
    };
    let log = meshaccel_node::logging::logger("meshaccel-installer", "", cfg.log_level);
    let result = match cli.verb {
        Verb::Run => daemon::run(cfg, log.clone()),
        Verb::Install => daemon::install_once(cfg, log.clone()),
        Verb::Uninstall => daemon::uninstall(cfg, log.clone()),
        Verb::Config => {
            println!("{:#}", cfg.effective());
            Ok(())
        }
    };
    if let Err(e) = result {
        slog::crit!(log, "failed"; "verb" => ?cli.verb, "error" => format!("{e:#}"));
        // slog's drain is synchronous: the record is written before we exit.
        std::process::exit(1);
    }
}
