//! The CNI verbs: each validates all input first (config.rs), so a bad input returns an
//! error before anything is created, then hands the features to the node library's
//! [`Driver`], which applies the failure policy to all of them alike.
use std::collections::HashSet;

use meshaccel_node::conf::PluginConf;
use meshaccel_node::feature::{Driver, Feature};
use meshaccel_node::logging;
use meshaccel_node::pins::AttachmentId;
use meshaccel_node::sockmap::Sockmap;
use meshaccel_smc::feature::Smc;
use rscni_plugin::cni::Cni;
use rscni_plugin::error::Error;
use rscni_plugin::types::{Args, CNIResult, NetConf};
use slog::{info, o, Logger};

use crate::config::{cni_error, plugin_conf, Invocation};

/// The features, in the order ADD sets them up (DEL tears them down in reverse).
const FEATURES: &[&dyn Feature] = &[&Sockmap, &Smc];

pub struct Meshaccel;

fn log_for(conf: &PluginConf, cmd: &'static str, inv: Option<&Invocation>) -> Logger {
    let level = logging::parse_level(&conf.log.level).unwrap_or(slog::Level::Info);
    let root = logging::plugin_logger("meshaccel", &conf.log.file, level, &conf.state_dir);
    match inv {
        Some(inv) => root.new(o!(
            "cmd" => cmd,
            "network" => inv.network.clone(),
            "containerID" => inv.container_id.clone(),
            "ifname" => inv.ifname.clone(),
            "pod" => inv.pod.display_name(),
        )),
        None => root.new(o!("cmd" => cmd)),
    }
}

fn prev_result(netconf: &NetConf, cmd: &str) -> Result<CNIResult, Error> {
    netconf.prev_result.clone().ok_or_else(|| {
        Error::InvalidNetworkConfig(format!(
            "meshaccel is a chained plugin: {cmd} needs a prevResult from the plugins before it"
        ))
    })
}

impl Cni for Meshaccel {
    fn add(&self, args: Args) -> Result<CNIResult, Error> {
        let inv = Invocation::from_args(&args)?;
        let prev = prev_result(args.config(), "ADD")?;
        let log = log_for(&inv.conf, "ADD", Some(&inv));
        Driver::new(FEATURES).add(&inv.pod(), &log).map_err(cni_error)?;
        Ok(prev)
    }

    fn del(&self, args: Args) -> Result<(), Error> {
        let inv = Invocation::for_teardown(&args)?;
        let log = log_for(&inv.conf, "DEL", Some(&inv));
        let had = Driver::new(FEATURES).del(&inv.conf, &inv.attachment).map_err(cni_error)?;
        let had_feature = |name| had.iter().any(|&(n, h)| n == name && h);
        info!(log, "released";
            "hadLink" => had_feature(Sockmap.name()),
            "hadSmc" => had_feature(Smc.name()),
            "netns" => inv.netns.as_ref().map(|p| p.display().to_string()));
        Ok(())
    }

    fn check(&self, args: Args) -> Result<(), Error> {
        let inv = Invocation::from_args(&args)?;
        prev_result(args.config(), "CHECK")?;
        let log = log_for(&inv.conf, "CHECK", Some(&inv));
        Driver::new(FEATURES).check(&inv.pod(), &log).map_err(cni_error)
    }

    fn status(&self, args: Args) -> Result<(), Error> {
        let conf = plugin_conf(args.config())?;
        let log = log_for(&conf, "STATUS", None);
        Driver::new(FEATURES).status(&conf, &log).map_err(cni_error)
    }

    fn gc(&self, args: Args) -> Result<(), Error> {
        let conf = plugin_conf(args.config())?;
        let log = log_for(&conf, "GC", None);
        let valid: HashSet<AttachmentId> = args
            .config()
            .valid_attachments
            .iter()
            .flatten()
            .filter_map(|a| AttachmentId::new(&a.container_id, &a.ifname).ok())
            .collect();
        Driver::new(FEATURES).gc(&conf, &args.config().name, &valid, &log).map_err(cni_error)
    }
}
