//! One layout, many writers: the copy engine (`Copier` into `oci:`) and [`OciLayoutWriter`] change
//! `index.json` through the same code, under the same lock on `oci-layout`.

use std::path::Path;
use std::sync::{Arc, Barrier};

use ferry_copy::archive::{ArchiveEntry, OciLayoutWriter};
use ferry_copy::{Copier, CopyOptions, Location, Silent};

use crate::{RawImage, write_layout};

/// The `ref.name` → manifest digest of every entry of the layout at `dir`, sorted.
fn entries(dir: &Path) -> Vec<(String, String)> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mut got: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                m["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    got
}

fn write_named(dir: &Path, img: &RawImage, name: &str) {
    let mut w = OciLayoutWriter::create(dir).unwrap();
    for (d, b) in img.blobs() {
        w.add_blob(&d, b.len() as u64, b).unwrap();
    }
    w.finish(&[ArchiveEntry {
        ref_name: Some(name.to_owned()),
        ..img.entry(None)
    }])
    .unwrap();
}

fn engine_copy(from: &Path, name: &str, to: &Path, as_name: &str) {
    let location =
        |dir: &Path, n: &str| -> Location { format!("oci:{}:{n}", dir.display()).parse().unwrap() };
    let copier = Copier::new(
        CopyOptions::default(),
        Box::new(|host: &str| unreachable!("no registry here, asked for {host}")),
        Arc::new(Silent),
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(copier.copy(&location(from, name), &location(to, as_name)))
        .unwrap();
}

/// Eight engine copies and eight layout writers, started together into one layout, leave sixteen
/// entries; then a name one of them wrote is replaced by the other, and nothing else changes.
#[test]
fn the_copy_engine_and_the_layout_writer_keep_each_others_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let copied = RawImage::new(b"copied config".to_vec(), vec![b"copied layer".to_vec()]);
    let written = RawImage::new(b"written config".to_vec(), vec![b"written layer".to_vec()]);
    let source = tmp.path().join("source");
    write_named(&source, &copied, "img");
    let copied_digest = copied.manifest.digest().to_string();
    let written_digest = written.manifest.digest().to_string();

    for round in 0..3 {
        let shared = tmp.path().join(format!("shared-{round}"));
        // Blobs already there, so the writers race for index.json, not for the blobs.
        write_layout(&shared, &copied, None);
        write_layout(&shared, &written, None);
        std::fs::remove_file(shared.join("index.json")).unwrap();

        let start = Arc::new(Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let (start, source, shared, written) = (
                    start.clone(),
                    source.clone(),
                    shared.clone(),
                    written.clone(),
                );
                std::thread::spawn(move || {
                    start.wait();
                    if i % 2 == 0 {
                        engine_copy(&source, "img", &shared, &format!("n{i:02}"));
                    } else {
                        write_named(&shared, &written, &format!("n{i:02}"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let want: Vec<(String, String)> = (0..16)
            .map(|i| {
                let digest = if i % 2 == 0 {
                    &copied_digest
                } else {
                    &written_digest
                };
                (format!("n{i:02}"), digest.clone())
            })
            .collect();
        assert_eq!(entries(&shared), want, "round {round}");

        // Same name, the other writer: the entry is replaced, the others kept.
        engine_copy(&source, "img", &shared, "n01");
        write_named(&shared, &written, "n00");
        let mut want = want;
        want[0].1 = written_digest.clone();
        want[1].1 = copied_digest.clone();
        assert_eq!(entries(&shared), want, "round {round}");
    }
}
