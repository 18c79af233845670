use std::io::Write;
use std::path::{Path, PathBuf};

use ferry_trace::{Format, Kind, Method, Position, Request, Trace, TraceError, format_timestamp};

/// The 999-record sample of the IBM trace (dal09, 2017-06-20), as the repository keeps it.
fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/traces/dal09_blobs_sample.csv")
}

/// Every request and every error of the trace at `paths`.
fn read(paths: &[PathBuf]) -> (Vec<Request>, Vec<TraceError>) {
    let mut requests = Vec::new();
    let mut errors = Vec::new();
    for item in Trace::open(paths, None).unwrap() {
        match item {
            Ok(r) => requests.push(r),
            Err(e) => errors.push(e),
        }
    }
    (requests, errors)
}

/// The sample's rows as the original JSON records (keys with dots, `T`/`Z` timestamps, integer
/// `written`), written independently of the crate's CSV reader.
fn sample_as_json_records() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(sample()).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            assert_eq!(fields.len(), header.len(), "the sample has no quoted commas");
            let get = |k: &str| fields[header.iter().position(|h| *h == k).unwrap()];
            serde_json::json!({
                "host": get("host"),
                "http.request.duration": get("http.request.duration").parse::<f64>().unwrap(),
                "http.request.method": get("http.request.method"),
                "http.request.remoteaddr": get("http.request.remoteaddr"),
                "http.request.uri": get("http.request.uri"),
                "http.request.useragent": get("http.request.useragent"),
                "http.response.status": get("http.response.status").parse::<u16>().unwrap(),
                "http.response.written": get("http.response.written").parse::<f64>().unwrap() as u64,
                "id": get("id"),
                "timestamp": format!("{}Z", get("timestamp").replace(' ', "T")),
            })
        })
        .collect()
}

#[test]
fn the_ibm_sample_reads_completely() {
    let (requests, errors) = read(&[sample()]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(requests.len(), 999);
    assert!(
        requests
            .iter()
            .all(|r| r.method == Method::Get && r.kind == Kind::Blob)
    );
    assert!(
        requests.windows(2).all(|w| w[0].time_us <= w[1].time_us),
        "in time order"
    );
    let first = &requests[0];
    assert_eq!(first.uri, "v2/64431afe/eec8974d/blobs/793c8a2b");
    assert_eq!(first.repo.as_deref(), Some("64431afe/eec8974d"));
    assert_eq!(first.reference.as_deref(), Some("793c8a2b"));
    assert_eq!(first.size, Some(72626));
    assert_eq!(first.status, Some(200));
    assert_eq!(first.client.as_deref(), Some("d51e1ab3"));
    assert_eq!(first.host.as_deref(), Some("786b3803"));
    assert_eq!(first.duration_s, Some(0.988950315));
    assert_eq!(
        format_timestamp(first.time_us.unwrap()),
        "2017-06-20T00:00:03.589Z"
    );
}

#[test]
fn json_json_lines_csv_and_compressed_forms_read_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let records = sample_as_json_records();
    let json = tmp.path().join("prod-dal09-logstash-2017.06.20-0.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&records).unwrap()).unwrap();
    let lines = tmp.path().join("access.jsonl");
    let mut f = std::fs::File::create(&lines).unwrap();
    for r in &records {
        writeln!(f, "{}", serde_json::to_string(r).unwrap()).unwrap();
    }
    let gz = tmp.path().join("t.json.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&std::fs::read(&json).unwrap()).unwrap();
    enc.finish().unwrap();
    let zst = tmp.path().join("t.csv.zst");
    std::fs::write(
        &zst,
        zstd::encode_all(&std::fs::read(sample()).unwrap()[..], 3).unwrap(),
    )
    .unwrap();

    let (from_csv, errors) = read(&[sample()]);
    assert!(errors.is_empty());
    for path in [&json, &lines, &gz, &zst] {
        let (got, errors) = read(std::slice::from_ref(path));
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        assert_eq!(got.len(), from_csv.len(), "{}", path.display());
        for (i, (g, c)) in got.iter().zip(&from_csv).enumerate() {
            assert_eq!(g, c, "{} request {i}", path.display());
        }
    }
    // A URI list keeps the order and the targets; it has no times or sizes.
    let uris = tmp.path().join("uris.txt");
    let list: String = from_csv.iter().map(|r| format!("{}\n", r.uri)).collect();
    std::fs::write(&uris, format!("# the sample's URIs\n\n{list}")).unwrap();
    let (got, errors) = read(&[uris]);
    assert!(errors.is_empty());
    assert_eq!(got.len(), from_csv.len());
    for (u, c) in got.iter().zip(&from_csv) {
        assert_eq!(
            (&u.uri, u.kind, &u.repo, &u.reference),
            (&c.uri, c.kind, &c.repo, &c.reference)
        );
        assert_eq!((u.method, u.time_us, u.size), (Method::Get, None, None));
    }
}

#[test]
fn zone_directories_merge_in_timestamp_order() {
    let tmp = tempfile::tempdir().unwrap();
    let records = sample_as_json_records();
    // Alternate records go to two zones; each file stays in time order.
    for (zone, parity) in [("dal09", 0), ("fra02", 1)] {
        let dir = tmp.path().join(zone);
        std::fs::create_dir(&dir).unwrap();
        let part: Vec<_> = records.iter().skip(parity).step_by(2).cloned().collect();
        std::fs::write(
            dir.join(format!("prod-{zone}-logstash-2017.06.20-0.json")),
            serde_json::to_vec(&part).unwrap(),
        )
        .unwrap();
    }
    std::fs::write(tmp.path().join("README"), "not a trace file").unwrap();
    let (merged, errors) = read(&[tmp.path().to_owned()]);
    assert!(errors.is_empty(), "{errors:?}");
    let (from_csv, _) = read(&[sample()]);
    assert_eq!(merged.len(), 999);
    assert!(merged.windows(2).all(|w| w[0].time_us <= w[1].time_us));
    let key = |r: &Request| (r.time_us, r.uri.clone(), r.client.clone());
    let mut a: Vec<_> = merged.iter().map(key).collect();
    let mut b: Vec<_> = from_csv.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same requests");
    // A glob over the zone directories' files reads the same.
    let (globbed, _) = read(&[
        tmp.path().join("dal09/prod-*.json"),
        tmp.path().join("fra02/prod-*.json"),
    ]);
    assert_eq!(globbed, merged);
}

#[test]
fn malformed_records_are_reported_with_positions_and_the_rest_read() {
    let tmp = tempfile::tempdir().unwrap();
    let good = |uri: &str, t: &str| serde_json::json!({"http.request.method": "GET", "http.request.uri": uri, "timestamp": t, "http.response.written": 10});
    let json = tmp.path().join("t.json");
    let records = serde_json::json!([
        good("v2/a/b/blobs/1", "2017-06-20T00:00:01.000Z"),
        {"http.request.method": "GET", "timestamp": "2017-06-20T00:00:02.000Z"},
        good("v2/a/b/blobs/3", "yesterday"),
        {"http.request.method": "GET", "http.request.uri": "v2/a/b/blobs/4", "http.response.written": -1},
        {"http.request.method": "GET", "http.request.uri": "v2/a/b/blobs/5", "http.response.status": 999},
        good("v2/a/b/manifests/v1", "2017-06-20T00:00:06.000Z"),
    ]);
    std::fs::write(&json, serde_json::to_vec(&records).unwrap()).unwrap();
    let (requests, errors) = read(std::slice::from_ref(&json));
    assert_eq!(
        requests.iter().map(|r| r.uri.as_str()).collect::<Vec<_>>(),
        ["v2/a/b/blobs/1", "v2/a/b/manifests/v1"]
    );
    let positions: Vec<_> = errors
        .iter()
        .map(|e| match e {
            TraceError::Record {
                file,
                position,
                why,
            } => {
                assert_eq!(file, &json);
                (*position, why.clone())
            }
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(
        positions.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        [2, 3, 4, 5].map(Position::Record)
    );
    assert!(positions[0].1.contains("http.request.uri"), "{positions:?}");
    assert!(positions[1].1.contains("yesterday"), "{positions:?}");
    assert!(
        errors[0]
            .to_string()
            .starts_with(&format!("{}: record 2: ", json.display()))
    );

    // A CSV row with a field too many; the rows around it read.
    let csv = tmp.path().join("t.csv");
    std::fs::write(
        &csv,
        "http.request.method,http.request.uri,timestamp\nGET,v2/a/blobs/1,2017-06-20 00:00:01\nGET,v2/a/blobs/2,2017-06-20 00:00:02,extra\nGET,\"v2/a/blobs/3\",2017-06-20 00:00:03\n",
    )
    .unwrap();
    let (requests, errors) = read(&[csv]);
    assert_eq!(requests.len(), 2);
    assert!(
        matches!(
            errors.as_slice(),
            [TraceError::Record {
                position: Position::Line(3),
                ..
            }]
        ),
        "{errors:?}"
    );
}

#[test]
fn truncated_and_foreign_files_end_with_one_error() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("cut.json");
    std::fs::write(
        &json,
        r#"[{"http.request.method":"GET","http.request.uri":"v2/a/blobs/1"},{"http.request.method":"GET","http.requ"#,
    )
    .unwrap();
    let (requests, errors) = read(&[json]);
    assert_eq!(requests.len(), 1, "the complete record is kept");
    assert!(
        matches!(errors.as_slice(), [TraceError::File { why, .. }] if why.contains("truncated inside record 2")),
        "{errors:?}"
    );

    let csv = tmp.path().join("other.csv");
    std::fs::write(&csv, "a,b\n1,2\n").unwrap();
    let (_, errors) = read(&[csv]);
    assert!(
        matches!(errors.as_slice(), [TraceError::File { why, .. }] if why.contains("http.request.uri")),
        "{errors:?}"
    );

    // One huge "record" is refused at a bound, not read into memory.
    let huge = tmp.path().join("huge.json");
    let mut f = std::fs::File::create(&huge).unwrap();
    f.write_all(b"[{\"http.request.uri\":\"").unwrap();
    f.write_all(&vec![b'a'; 3 << 20]).unwrap();
    drop(f);
    let (_, errors) = read(&[huge]);
    assert!(
        matches!(errors.as_slice(), [TraceError::File { why, .. }] if why.contains("longer than")),
        "{errors:?}"
    );

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(matches!(
        Trace::open(&[empty], None),
        Err(TraceError::NoFiles(_))
    ));
    let missing = tmp.path().join("missing.json");
    assert!(matches!(
        Trace::open(&[missing], Some(Format::Json)),
        Err(TraceError::Io { .. })
    ));
}
