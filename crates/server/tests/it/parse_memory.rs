//! The memory a manifest takes to parse, measured in a process of its own (the peak RSS of this
//! test binary re-run for one probe), against [`ferry_server::MANIFEST_PARSE_FACTOR`], which the
//! server's manifest budgets charge per byte: if parsing ever took more, the budgets would no
//! longer bound memory.

use ferry_oci::{Algorithm, Manifest};

const PROBE_ENV: &str = "FERRY_PARSE_MEMORY_PROBE";

/// Hostile manifests of just under 4 MiB, each shaped to make parsing allocate as much as it can
/// per input byte: many one-character annotations, many empty `urls`, many minimal layers, an index
/// of minimal platform entries.
fn hostile(kind: &str) -> Vec<u8> {
    let max = (4 << 20) - 256;
    let d = format!("sha256:{}", "a".repeat(64));
    let config = format!(r#""config":{{"mediaType":"x","digest":"{d}","size":1}}"#);
    let (head, item, tail): (String, Box<dyn Fn(usize) -> String>, &str) = match kind {
        "annotations" => (
            format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",{config},"layers":[],"annotations":{{"#),
            Box::new(|i| format!(r#""{i:x}":"""#)),
            "}}",
        ),
        "urls" => (
            format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",{config},"layers":[{{"mediaType":"","digest":"{d}","size":0,"urls":["#),
            Box::new(|_| r#""""#.to_owned()),
            "]}]}",
        ),
        "layers" => (
            format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",{config},"layers":["#),
            Box::new(move |_| format!(r#"{{"mediaType":"","digest":"{d}","size":0,"annotations":{{}}}}"#)),
            "]}",
        ),
        _ => (
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":["#.to_owned(),
            Box::new(move |_| format!(r#"{{"mediaType":"","digest":"{d}","size":0,"platform":{{"architecture":"","os":""}}}}"#)),
            "]}",
        ),
    };
    let mut body = head;
    let mut i = 0;
    while body.len() < max {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&item(i));
        i += 1;
    }
    body.push_str(tail);
    body.into_bytes()
}

/// This process's resident set size now, and its peak, from /proc (required: without them the
/// probe would measure nothing).
fn rss() -> (u64, u64) {
    ferry_testkit::peers::rss(std::process::id()).expect("/proc/self/status has VmRSS and VmHWM")
}

/// Run alone in a child process by the test below (otherwise it only checks that each hostile
/// manifest parses): prints the peak memory the parse added, per input byte.
#[test]
fn probe() {
    let kind = std::env::var(PROBE_ENV).unwrap_or_default();
    let kinds = if kind.is_empty() {
        vec!["annotations", "urls", "layers", "index"]
    } else {
        vec![kind.as_str()]
    };
    for k in kinds {
        let bytes = hostile(k);
        let len = bytes.len();
        let media_type = if k == "index" {
            "application/vnd.oci.image.index.v1+json"
        } else {
            "application/vnd.oci.image.manifest.v1+json"
        };
        // From what is resident now (the input included) to the peak while parsing: an earlier,
        // higher peak would otherwise hide part of the parse.
        let (before, _) = rss();
        let parsed = Manifest::parse_as(bytes, Some(media_type), Algorithm::Sha256);
        let (_, after) = rss();
        assert!(parsed.is_ok(), "{k}: {:?}", parsed.err());
        if !kind.is_empty() {
            // The input itself is counted as already allocated (it was, before `before`).
            println!(
                "PROBE {k} {}",
                after.saturating_sub(before) as f64 / len as f64
            );
        }
        drop(parsed);
    }
}

#[test]
fn parsing_a_manifest_takes_at_most_the_parse_factor() {
    for kind in ["annotations", "urls", "layers", "index"] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "parse_memory::probe",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PROBE_ENV, kind)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ratio: f64 = stdout
            .lines()
            .find_map(|l| l.split(&format!("PROBE {kind} ")).nth(1))
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no probe result in {stdout}"));
        eprintln!("{kind}: parsing took {ratio:.1}× the manifest's size");
        assert!(
            ratio < ferry_server::MANIFEST_PARSE_FACTOR as f64,
            "{kind}: parsing took {ratio:.1}× the manifest's size, more than MANIFEST_PARSE_FACTOR"
        );
    }
}
