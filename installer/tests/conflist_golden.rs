//! Chaining meshaccel into realistic network configurations, compared byte for byte with
//! `testdata/<case>.golden`. `UPDATE_GOLDEN=1 cargo test -p meshaccel-installer --test
//! conflist_golden` rewrites the golden files; review the diff before committing it.
use std::fs;
use std::path::{Path, PathBuf};

use meshaccel_installer::confdir::{self, Change};
use meshaccel_installer::conflist::{self, Format};
use serde_json::{json, Value};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

/// The entry the daemon builds from the default ConfigMap.
fn entry() -> Value {
    let settings = json!({"sockmap": {"enabled": true}, "failurePolicy": "open", "bpffsRoot": "/sys/fs/bpf/meshaccel"});
    conflist::entry(settings.as_object().unwrap()).unwrap()
}

/// A conf dir holding one input file, removed on drop.
struct ConfDir(PathBuf);

impl ConfDir {
    fn with(input: &Path) -> (Self, PathBuf) {
        let tag = input.file_stem().unwrap().to_str().unwrap();
        let dir = std::env::temp_dir().join(format!("meshaccel-golden-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("10-{}", input.file_name().unwrap().to_str().unwrap()));
        fs::copy(input, &file).unwrap();
        (Self(dir), file)
    }
}

impl Drop for ConfDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn check_golden(case: &str, actual: &[u8]) {
    let golden = testdata().join(format!("{case}.golden"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::write(&golden, actual).unwrap();
        return;
    }
    let want = fs::read(&golden).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", golden.display()));
    assert!(
        want == actual,
        "{case}: output differs from {}\n--- want\n{}\n--- got\n{}",
        golden.display(),
        String::from_utf8_lossy(&want),
        String::from_utf8_lossy(actual)
    );
}

fn plugins_of(bytes: &[u8], format: Format) -> Value {
    conflist::parse(bytes, format).unwrap()["plugins"].clone()
}

/// Installs into a conf dir holding `file`, compares with the golden file, then proves the
/// install idempotent and the uninstall a restore of every other plugin.
fn golden_case(file: &str, expect: Change) {
    let input = testdata().join(file);
    let case = input.file_stem().unwrap().to_str().unwrap().to_string();
    let original = fs::read(&input).unwrap();
    let (dir, path) = ConfDir::with(&input);

    let chained = confdir::install(&dir.0, &entry()).unwrap();
    let expect = match expect {
        Change::Converted { .. } => Change::Converted { from: path.clone() },
        other => other,
    };
    assert_eq!(chained.change, expect, "{case}");
    assert!(!path.exists() || chained.path == path, "{case}: the converted .conf is removed");
    let out = fs::read(&chained.path).unwrap();
    check_golden(&case, &out);
    assert_eq!(confdir::verify(&dir.0, &entry()).unwrap().path, chained.path);
    assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1, "{case}: one file, no temp left");

    let again = confdir::install(&dir.0, &entry()).unwrap();
    assert_eq!(again.change, Change::None, "{case}: second install");
    assert_eq!(fs::read(&chained.path).unwrap(), out, "{case}: second install rewrote the file");

    assert_eq!(confdir::uninstall(&dir.0).unwrap(), vec![chained.path.clone()]);
    let restored = plugins_of(&fs::read(&chained.path).unwrap(), Format::List);
    let mut want = plugins_of(&original, Format::of(&input).unwrap());
    want.as_array_mut().unwrap().retain(|p| p["type"] != "meshaccel");
    assert_eq!(restored, want, "{case}: uninstall leaves every other plugin as it was");
}

#[test]
fn flannel() {
    golden_case("flannel.conflist", Change::Rewrote);
}

#[test]
fn calico() {
    golden_case("calico.conflist", Change::Rewrote);
}

#[test]
fn bridge_conf_becomes_a_conflist() {
    golden_case("bridge.conf", Change::Converted { from: PathBuf::new() });
}

#[test]
fn after_istio_cni() {
    golden_case("istio.conflist", Change::Rewrote);
    let out = fs::read(testdata().join("istio.golden")).unwrap();
    let types: Vec<Value> =
        plugins_of(&out, Format::List).as_array().unwrap().iter().map(|p| p["type"].clone()).collect();
    assert_eq!(types, [json!("calico"), json!("portmap"), json!("istio-cni"), json!("meshaccel")]);
}

#[test]
fn already_chained_is_left_byte_for_byte() {
    golden_case("chained.conflist", Change::None);
    assert_eq!(
        fs::read(testdata().join("chained.golden")).unwrap(),
        fs::read(testdata().join("chained.conflist")).unwrap()
    );
}

#[test]
fn drifted_entries_are_replaced_not_duplicated() {
    golden_case("drifted.conflist", Change::Rewrote);
}

#[test]
fn invalid_json_is_an_error_and_the_file_is_untouched() {
    let input = testdata().join("invalid.conflist");
    let original = fs::read(&input).unwrap();
    let (dir, path) = ConfDir::with(&input);
    let err = confdir::install(&dir.0, &entry()).unwrap_err();
    assert!(matches!(err, confdir::Error::Invalid { .. }), "{err}");
    // The golden error names the file without its temp directory.
    let msg = format!("error: {err}\n").replace(&format!("{}/", dir.0.display()), "");
    check_golden("invalid", msg.as_bytes());
    assert_eq!(fs::read(&path).unwrap(), original, "file untouched");
    assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1, "no temp file left");
    assert!(confdir::verify(&dir.0, &entry()).is_err());
    assert_eq!(confdir::uninstall(&dir.0).unwrap(), Vec::<PathBuf>::new());
}
