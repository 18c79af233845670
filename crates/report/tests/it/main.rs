//! The results schema: files written before it had a version are still read, what is written
//! reads back the same, and a file of another schema version or of no schema is refused with an
//! error that says which.

use std::error::Error;
use std::path::{Path, PathBuf};

use ferry_report::results::{ReadError, Results, SCHEMA_VERSION, SchemaError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures")
        .join(name)
}

/// The whole chain, as the binary prints it (`{:#}`).
fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

/// `fixtures/before-schema-version.json` is a `ferry load run --out` file of a benchmark run
/// (docs/benchmarks), written before results had a `schema_version`.
#[test]
fn a_results_file_from_before_the_schema_version_is_read_as_version_1() {
    let r = ferry_report::read(&fixture("before-schema-version.json")).unwrap();
    assert_eq!(r.schema_version, 1);
    assert_eq!(r.label, "http://127.0.0.1:45391");
    assert_eq!(r.target, "127.0.0.1:45391");
    assert_eq!(r.mode, "closed");
    assert_eq!(r.summary.images, 1500);
    assert_eq!(r.summary.requests, 12000);
    assert_eq!(r.summary.latency_ms["image"].count, 1500);
    assert_eq!(r.summary.latency_ms["image"].p50, 58.783);
    assert_eq!(r.tallies.len(), 1);
    assert_eq!(r.tallies[0].pullers, 10);
    assert_eq!(r.tallies[0].images, 740);
    let table = ferry_report::table(&[r]);
    assert!(
        table.contains("| http://127.0.0.1:45391 | 1500 | 161.3 | 0 | 58.8 | 125.2 | 165.8 |"),
        "{table}"
    );
}

#[test]
fn written_results_carry_the_version_and_read_back_the_same() {
    let old = ferry_report::read(&fixture("before-schema-version.json")).unwrap();
    let json = serde_json::to_vec_pretty(&old).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(value["schema_version"], SCHEMA_VERSION);
    assert_eq!(Results::from_json(&json).unwrap(), old);
}

#[test]
fn another_schema_version_is_refused_before_its_content_is_parsed() {
    // A future writer may change anything; only the version is looked at.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("v2.json");
    std::fs::write(&path, r#"{"schema_version": 2, "runs": []}"#).unwrap();
    let e = ferry_report::read(&path).unwrap_err();
    assert!(
        matches!(&e, ReadError::UnsupportedVersion { found: 2, path: p } if *p == path),
        "{e:?}"
    );
    let said = chain(&e);
    assert!(
        said.contains("results schema version 2") && said.contains("reads version 1"),
        "{said}"
    );
    assert!(matches!(
        Results::from_json(br#"{"schema_version": 0}"#),
        Err(SchemaError::UnsupportedVersion { found: 0 })
    ));
}

#[test]
fn a_file_that_is_not_results_or_not_there_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("not-results.json");
    std::fs::write(&path, r#"{"label": "x"}"#).unwrap();
    let e = ferry_report::read(&path).unwrap_err();
    assert!(matches!(e, ReadError::NotResults { .. }), "{e:?}");
    let said = chain(&e);
    assert!(
        said.starts_with(&format!(
            "{} is not a ferry load results file: missing field",
            path.display()
        )),
        "{said}"
    );

    let missing = tmp.path().join("missing.json");
    let e = ferry_report::read(&missing).unwrap_err();
    assert!(matches!(e, ReadError::Io { .. }), "{e:?}");
    let said = chain(&e);
    assert!(
        said.starts_with(&format!("cannot read {}: ", missing.display())),
        "{said}"
    );
    // The OS error once, not twice.
    assert_eq!(said.matches("os error").count(), 1, "{said}");
}
