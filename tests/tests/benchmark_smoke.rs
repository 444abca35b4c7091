//! The benchmark in its quickest mode (one size, one repetition, a few pods) runs end to end
//! through the real chain and produces a table, a JSON report and a heatmap whose cells are
//! all valid: every accelerated sample was really redirected (meshaccel's counters), every
//! plain one was not. No timing is asserted.
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

#[test]
fn quickest_benchmark_produces_a_table_of_valid_cells() {
    let out = PathBuf::from(format!("/tmp/meshaccel-bench-smoke-{}", std::process::id()));
    let _ = fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_meshaccel-bench"))
        .args(["--sizes", "64", "--reps", "1", "--pods", "3", "--out"])
        .arg(&out)
        .output()
        .expect("run meshaccel-bench");
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "meshaccel-bench failed ({}): {stderr}", run.status);

    assert!(stdout.contains("| metric | size | pod↔pod ratio |"), "no table on stdout: {stdout}");
    assert!(stdout.contains("| metric | size | pod↔pod IPv6 ratio |"), "no IPv6 table on stdout: {stdout}");
    assert_eq!(fs::read_to_string(out.join("results.md")).unwrap(), stdout);
    let svg = fs::read_to_string(out.join("heatmap.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");

    let report: Value = serde_json::from_str(&fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let cells = report["cells"].as_array().unwrap();
    // ping-pong and stream at 64 B, and the connection rate, each pod↔pod and loopback,
    // over IPv4 and over IPv6.
    assert_eq!(cells.len(), 12, "{cells:#?}");
    let scenarios: std::collections::BTreeSet<&str> =
        cells.iter().map(|c| c["key"]["scenario"].as_str().unwrap()).collect();
    assert_eq!(scenarios, ["loopback", "loopback6", "pod-to-pod", "pod-to-pod6"].into(), "{cells:#?}");
    for c in cells {
        assert_eq!(c["valid"], true, "invalid cell: {c:#}\n{stderr}");
        // Streams of 64 B writes move to plain TCP by design (the streaming rule); the
        // rest is redirected.
        if c["key"]["metric"] == "stream" {
            assert_eq!(c["chose_plain"], true, "{c:#}");
        } else {
            assert!(c["min_redirected_share"].as_f64().unwrap() > 0.5, "{c:#}");
        }
        assert!(c["ratio"]["median"].as_f64().unwrap() > 0.0, "{c:#}");
        assert!(c["reference"]["median"].as_f64().unwrap() > 0.0, "{c:#}");
    }
    let overhead = report["overhead"].as_array().unwrap();
    assert_eq!(overhead.len(), 3, "{overhead:#?}");
    for r in overhead {
        assert!(r["ratio"]["median"].as_f64().unwrap() > 0.0, "overhead row without a valid pair: {r:#}");
    }
    assert!(stdout.contains("Overhead on traffic meshaccel does not accelerate"), "{stdout}");
    let plugins: Vec<&str> =
        report["cni"]["plugins"].as_array().unwrap().iter().map(|p| p["plugin"].as_str().unwrap()).collect();
    assert_eq!(plugins, ["bridge", "meshaccel", "whole chain"]);
    assert_eq!(report["cni"]["plugins"][1]["add"]["n"], 3);
    assert_eq!(report["cni"]["plugins"][1]["del"]["n"], 3);
    let _ = fs::remove_dir_all(&out);
}
