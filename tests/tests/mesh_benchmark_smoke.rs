//! `meshaccel-bench mesh` in its quickest form runs end to end (two meshed pod pairs, wrk and
//! nginx, TCP echo) and reports valid samples: the accelerated pair's traffic was really
//! redirected, the plain pair's was not. No timing is asserted.
use std::fs;
use std::process::Command;

use serde_json::Value;

#[test]
fn quickest_mesh_benchmark_produces_valid_samples() {
    let json = format!("/tmp/meshaccel-mesh-bench-smoke-{}.json", std::process::id());
    let run = Command::new(env!("CARGO_BIN_EXE_meshaccel-bench"))
        .args(["mesh", "--seconds", "1", "--rounds", "1", "--conns", "4", "--json", &json])
        .output()
        .expect("run meshaccel-bench mesh");
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "meshaccel-bench mesh failed ({}): {stderr}", run.status);
    assert!(
        stdout.contains("| http | **accelerated / plain** |") && stdout.contains("| echo | **accelerated / plain** |"),
        "{stdout}"
    );

    let report: Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    let _ = fs::remove_file(&json);
    let samples = report["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 4, "http and echo, plain and accelerated: {samples:#?}");
    for s in samples {
        assert!(s["qps"].as_f64().unwrap() > 0.0, "{s:#}");
        let redirected = s["counters"]["bytes_redirected"].as_u64().unwrap_or(0);
        if s["mode"] == "plain" {
            assert_eq!(redirected, 0, "{s:#}");
        } else {
            assert!(
                redirected as f64 > s["qps"].as_f64().unwrap() * 1024.0,
                "about 1 KiB per request each way on 3 hops: {s:#}"
            );
        }
    }
}
