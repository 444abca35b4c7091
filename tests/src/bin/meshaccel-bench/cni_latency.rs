//! CNI ADD and DEL latency as a runtime sees it: spawn to exit of each plugin binary of the
//! chain (bridge runs host-local inside its time), over many pods. A batch of pods is added
//! (so later ADDs run with many pods on the node), then each gets the DEL of StopPodSandbox
//! (netns present, cached result), timed, before the pod is torn down. The traffic pods
//! loaded the BPF programs earlier, so no ADD here pays for that.
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use meshaccel_tests::{Chain, TestNode};
use serde::Serialize;

use crate::stats::quantile;

/// host-local hands out a /24 per node here; the traffic pods hold a few addresses.
const BATCH: usize = 200;

#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub n: usize,
}

fn percentiles(xs: &[Duration]) -> Percentiles {
    let mut ms: Vec<f64> = xs.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q| if ms.is_empty() { f64::NAN } else { quantile(&ms, q) };
    Percentiles { p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1.0), n: ms.len() }
}

#[derive(Clone, Debug, Serialize)]
pub struct PluginTimes {
    pub plugin: String,
    pub add: Percentiles,
    pub del: Percentiles,
}

#[derive(Clone, Debug, Serialize)]
pub struct CniLatency {
    pub pods: usize,
    /// Each plugin of the chain, then the whole chain.
    pub plugins: Vec<PluginTimes>,
}

#[derive(Default)]
struct Times {
    add: Vec<Duration>,
    del: Vec<Duration>,
}

pub fn measure(node: &TestNode, pods: usize) -> Result<CniLatency> {
    let (mut by_plugin, mut order) = (BTreeMap::<String, Times>::new(), Vec::<String>::new());
    let mut record = |plugin: &str, d: Duration, add: bool| {
        if !order.iter().any(|p| p == plugin) {
            order.push(plugin.to_string());
        }
        let t = by_plugin.entry(plugin.to_string()).or_default();
        if add { t.add.push(d) } else { t.del.push(d) }
    };
    let network = node.network(Chain::Accelerated);
    let mut done = 0;
    while done < pods {
        let batch = BATCH.min(pods - done);
        let mut live = Vec::with_capacity(batch);
        for i in done..done + batch {
            let pod = node.accelerated_pod(&format!("cni{i}"))?;
            let timings = pod.add_timings().clone();
            timings.iter().for_each(|(p, d)| record(p, *d, true));
            record(CHAIN, timings.iter().map(|t| t.1).sum(), true);
            live.push(pod);
        }
        for pod in live {
            let timings = network.del_timed(pod.runtime_conf(), Some(pod.result()))?;
            timings.iter().for_each(|(p, d)| record(p, *d, false));
            record(CHAIN, timings.iter().map(|t| t.1).sum(), false);
        }
        done += batch;
        eprintln!("[cni] {done}/{pods} pods added and deleted");
    }
    // Chain order, whole chain last.
    order.retain(|p| p != CHAIN);
    order.push(CHAIN.into());
    let plugins = order
        .iter()
        .map(|p| PluginTimes { plugin: p.clone(), add: percentiles(&by_plugin[p].add), del: percentiles(&by_plugin[p].del) })
        .collect();
    Ok(CniLatency { pods, plugins })
}

pub const CHAIN: &str = "whole chain";
