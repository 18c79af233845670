//! `ferry copy` between a real CNCF Distribution (`docker-registry`), OCI layouts and `dir:`
//! directories, checked with skopeo where it can read or write the same formats.

use std::path::Path;
use std::process::{Command, Output};

use ferry_oci::Digest;
use ferry_testkit::faults::{Fault, FaultProxy, Target};
use ferry_testkit::image::{Blob, Image, image};
use ferry_testkit::peers::{DockerRegistry, Skopeo, wait_until};

use crate::ferry_bin;

fn ferry(args: &[&str]) -> Output {
    Command::new(ferry_bin())
        .args(args)
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .env_remove("FERRY_LOG")
        .output()
        .unwrap()
}

/// Runs `ferry copy --json ARGS` and returns its summary.
fn copy_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["copy", "--json"];
    all.extend_from_slice(args);
    let out = ferry(&all);
    assert!(
        out.status.success(),
        "ferry {all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The one-line error of a copy that must fail.
fn failure(args: &[&str]) -> String {
    let mut all = vec!["copy"];
    all.extend_from_slice(args);
    let out = ferry(&all);
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert!(!out.status.success(), "ferry {all:?} succeeded");
    assert!(!err.contains("panicked"), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert!(!errors.is_empty(), "no error line: {err}");
    err
}

fn sha(bytes: &[u8]) -> Digest {
    Digest::sha256(bytes)
}

/// Every file under `dir` whose name is a SHA-256 hex holds content of that digest.
fn assert_blobs_verified(dir: &Path) {
    for entry in walk(dir) {
        let name = entry.file_name().unwrap().to_str().unwrap().to_owned();
        let hex = name.trim_end_matches(".manifest.json");
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let bytes = std::fs::read(&entry).unwrap();
            assert_eq!(
                sha(&bytes).hex(),
                hex,
                "{} is not its digest",
                entry.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A registry holding `team/app:v1` (one image), `team/other:v1` (sharing the first layer of
/// app) and `team/multi:v1` (an amd64 + arm64 index).
struct Seeded {
    tmp: tempfile::TempDir,
    registry: DockerRegistry,
    skopeo: Skopeo,
    app: Image,
    other: Image,
    arm: Image,
    idx: Blob,
}

fn seeded() -> Option<Seeded> {
    let (Some(skopeo), Some(registry)) = (Skopeo::new(), DockerRegistry::start()) else {
        return None;
    };
    let tmp = tempfile::tempdir().unwrap();
    let app = image(7, 3, 200_000, "amd64");
    skopeo.push_image(
        &app,
        tmp.path(),
        &format!("{}/team/app:v1", registry.host()),
    );
    let mut other = image(8, 2, 50_000, "amd64");
    // Share app's first layer, so a copy of both stores it once.
    other.layers.insert(0, app.layers[0].clone());
    other = rebuild(other);
    skopeo.push_image(
        &other,
        tmp.path(),
        &format!("{}/team/other:v1", registry.host()),
    );
    let amd = image(1, 2, 10_000, "amd64");
    let arm = image(2, 2, 10_000, "arm64");
    let idx = skopeo.push_index(
        &[(&amd, "amd64"), (&arm, "arm64")],
        tmp.path(),
        &format!("{}/team/multi:v1", registry.host()),
    );
    Some(Seeded {
        tmp,
        registry,
        skopeo,
        app,
        other,
        arm,
        idx,
    })
}

/// `img` with its manifest written anew for its (changed) layers.
fn rebuild(img: Image) -> Image {
    let layers: Vec<serde_json::Value> = img.layers.iter().map(|l| l.descriptor()).collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": img.config.descriptor(),
        "layers": layers,
    });
    Image {
        manifest: Blob::new(
            "application/vnd.oci.image.manifest.v1+json",
            serde_json::to_vec(&manifest).unwrap(),
        ),
        ..img
    }
}

#[test]
fn registry_to_layout_to_dir_and_back_keeps_every_digest_and_skopeo_reads_both_ways() {
    let Some(s) = seeded() else { return };
    let host = s.registry.host();
    let layout = s.tmp.path().join("layout");
    let v = copy_json(&[
        &format!("registry://{host}/team/app:v1"),
        &format!("oci:{}:v1", layout.display()),
    ]);
    assert_eq!(v["images"][0]["digest"], s.app.manifest.digest.to_string());
    assert_eq!(v["images"][0]["blobs_copied"], 4);
    // skopeo reads the layout: the manifest it sees is the registry's, byte for byte.
    let raw = s
        .skopeo
        .run(&["inspect", "--raw", &format!("oci:{}:v1", layout.display())]);
    assert_eq!(sha(raw.as_bytes()), s.app.manifest.digest);
    assert!(!layout.join(".ferry-partial").exists());
    assert_blobs_verified(&layout);

    // layout → dir → registry (by skopeo) → the same digest.
    let dir = s.tmp.path().join("dir");
    copy_json(&[
        &format!("oci:{}:v1", layout.display()),
        &format!("dir:{}", dir.display()),
    ]);
    assert_eq!(
        std::fs::read(dir.join("manifest.json")).unwrap(),
        s.app.manifest.bytes
    );
    for b in s.app.blobs() {
        assert_eq!(std::fs::read(dir.join(b.digest.hex())).unwrap(), b.bytes);
    }
    s.skopeo.copy(
        &format!("dir:{}", dir.display()),
        &format!("docker://{host}/team/back:v1"),
        &[],
    );
    let back = s.skopeo.raw(&format!("docker://{host}/team/back:v1"));
    assert_eq!(sha(&back), s.app.manifest.digest);

    // A layout written by skopeo is read by ferry.
    let theirs = s.tmp.path().join("theirs");
    s.skopeo.copy(
        &format!("docker://{host}/team/other:v1"),
        &format!("oci:{}:x", theirs.display()),
        &[],
    );
    let again = s.tmp.path().join("again");
    let v = copy_json(&[
        &format!("oci:{}:x", theirs.display()),
        &format!("dir:{}", again.display()),
    ]);
    assert_eq!(
        v["images"][0]["digest"],
        s.other.manifest.digest.to_string()
    );
    assert_eq!(
        std::fs::read(again.join("manifest.json")).unwrap(),
        s.other.manifest.bytes
    );
}

#[test]
fn a_second_copy_finds_every_blob_and_transfers_nothing() {
    let Some(s) = seeded() else { return };
    let src = format!("registry://{}/team/app:v1", s.registry.host());
    let dst = format!("oci:{}:v1", s.tmp.path().join("l").display());
    copy_json(&[&src, &dst]);
    let v = copy_json(&[&src, &dst]);
    assert_eq!(v["images"][0]["blobs_copied"], 0);
    assert_eq!(v["images"][0]["blobs_present"], 4);
    assert_eq!(v["images"][0]["bytes_copied"], 0);
}

#[test]
fn without_a_terminal_progress_is_one_line_per_blob_on_stderr_and_quiet_prints_nothing() {
    let Some(s) = seeded() else { return };
    let src = format!("registry://{}/team/app:v1", s.registry.host());
    let dst = format!("oci:{}:v1", s.tmp.path().join("l").display());
    // The test's stderr is a pipe: the line printer, not bars.
    let out = ferry(&["copy", &src, &dst]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        out.stdout.is_empty(),
        "progress on stdout: {:?}",
        out.stdout
    );
    let blob_lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with(&format!("{src}: sha256:")))
        .collect();
    assert_eq!(blob_lines.len(), s.app.blobs().count(), "{err}");
    for b in s.app.blobs() {
        let short = &b.digest.as_str()[..19];
        assert_eq!(
            blob_lines.iter().filter(|l| l.contains(short)).count(),
            1,
            "{short} in {err}"
        );
    }
    assert!(blob_lines.iter().all(|l| l.ends_with(" copied")), "{err}");
    assert!(
        err.contains(&format!("{src}: done, {}", s.app.manifest.digest)),
        "{err}"
    );
    let last = err.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("copied 1 image: ")
            && last.contains("MB/s")
            && last.contains(", 0 already at the destination"),
        "{last}"
    );
    assert!(!err.contains('\x1b'), "terminal escapes in a log: {err:?}");

    // Again: every blob is there; the final line says so.
    let out = ferry(&["copy", &src, &dst]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches(" already there\n").count(), 4, "{err}");
    assert!(
        err.trim_end()
            .ends_with("0 blobs copied, 4 already at the destination"),
        "{err}"
    );

    // --quiet: nothing at all on success, on either stream.
    let quiet = format!("oci:{}:v1", s.tmp.path().join("q").display());
    let out = ferry(&["copy", "--quiet", &src, &quiet]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");

    // --json: the summary alone on stdout, no progress lines on stderr.
    let json = format!("oci:{}:v1", s.tmp.path().join("j").display());
    let out = ferry(&["copy", "--json", &src, &json]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["images"][0]["blobs_copied"], 4);
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn platforms_of_an_index_one_several_or_all() {
    let Some(s) = seeded() else { return };
    let src = format!("registry://{}/team/multi:v1", s.registry.host());
    // --all-platforms: the index byte for byte.
    let all = s.tmp.path().join("all");
    let v = copy_json(&["--all-platforms", &src, &format!("oci:{}:m", all.display())]);
    assert_eq!(v["images"][0]["digest"], s.idx.digest.to_string());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(all.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], s.idx.digest.to_string());
    assert_blobs_verified(&all);

    // One platform: that image's manifest, not the index.
    let one = s.tmp.path().join("one");
    let v = copy_json(&[
        "--platform",
        "linux/arm64",
        &src,
        &format!("oci:{}:m", one.display()),
    ]);
    assert_eq!(v["images"][0]["digest"], s.arm.manifest.digest.to_string());

    // Both platforms named: all the index has, so the index is kept as it is.
    let both = s.tmp.path().join("both");
    let v = copy_json(&[
        "--platform",
        "linux/arm64",
        "--platform",
        "linux/amd64",
        &src,
        &format!("oci:{}:m", both.display()),
    ]);
    assert_eq!(v["images"][0]["digest"], s.idx.digest.to_string());

    // A platform the index lacks: one error naming the ones it has; nothing written.
    let none = s.tmp.path().join("none");
    let err = failure(&[
        "--platform",
        "linux/s390x",
        &src,
        &format!("oci:{}:m", none.display()),
    ]);
    assert!(err.contains("no platform linux/s390x"), "{err}");
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64"),
        "{err}"
    );
    assert!(!none.exists(), "a failed copy left {}", none.display());
}

#[test]
fn many_images_into_one_dir_store_each_shared_layer_once() {
    let Some(s) = seeded() else { return };
    let host = s.registry.host();
    let list = s.tmp.path().join("list.txt");
    std::fs::write(
        &list,
        format!(
            "# two images sharing a layer\nregistry://{host}/team/app:v1\n\nregistry://{host}/team/other:v1\n"
        ),
    )
    .unwrap();
    let dir = s.tmp.path().join("many");
    let v = copy_json(&[
        "--from-file",
        list.to_str().unwrap(),
        &format!("dir:{}?unique_names=true", dir.display()),
    ]);
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    // The shared layer is transferred once in all.
    let copied: u64 = images
        .iter()
        .map(|i| i["blobs_copied"].as_u64().unwrap())
        .sum();
    let distinct: std::collections::HashSet<&Digest> = s
        .app
        .blobs()
        .chain(s.other.blobs())
        .map(|b| &b.digest)
        .collect();
    assert_eq!(copied, distinct.len() as u64);
    let blob_files = walk(&dir)
        .into_iter()
        .filter(|p| p.file_name().unwrap().len() == 64)
        .count();
    assert_eq!(blob_files, distinct.len());
    let catalog: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("images.json")).unwrap()).unwrap();
    let names: Vec<&str> = catalog["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&format!("{host}/team/app:v1").as_str()),
        "{names:?}"
    );
    assert!(
        names.contains(&format!("{host}/team/other:v1").as_str()),
        "{names:?}"
    );
    assert_blobs_verified(&dir);
}

#[test]
fn concurrent_copies_into_one_layout_keep_every_index_entry() {
    let Some(s) = seeded() else { return };
    let host = s.registry.host();
    let layout = s.tmp.path().join("shared");
    // Blobs already there, so the copies below race for index.json, not for the blobs.
    for repo in ["app", "other"] {
        copy_json(&[
            &format!("registry://{host}/team/{repo}:v1"),
            &format!("oci:{}:seed-{repo}", layout.display()),
        ]);
    }
    let names: Vec<String> = (0..16).map(|i| format!("n{i:02}")).collect();
    let children: Vec<std::process::Child> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let repo = if i % 2 == 0 { "app" } else { "other" };
            Command::new(ferry_bin())
                .args([
                    "copy",
                    "-q",
                    &format!("registry://{host}/team/{repo}:v1"),
                    &format!("oci:{}:{n}", layout.display()),
                ])
                .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut got: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    got.sort();
    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
    want.extend(["seed-app", "seed-other"]);
    want.sort();
    assert_eq!(got, want);
    assert_blobs_verified(&layout);
}

#[test]
fn a_broken_body_is_continued_with_range_and_a_killed_copy_resumes_its_partial_layer() {
    let Some(s) = seeded() else { return };
    let proxy = FaultProxy::start(&s.registry.host());
    let big = &s.app.layers[1];
    let blob_path = format!("/v2/team/app/blobs/{}", big.digest);

    // A reset mid-body: the same run asks for the rest with Range and finishes.
    proxy.inject(Target::Blob, Fault::ResetMidBody, 1);
    let layout = s.tmp.path().join("reset");
    let v = copy_json(&[
        "-j",
        "1",
        &format!("registry://{}/team/app:v1", proxy.host()),
        &format!("oci:{}:v1", layout.display()),
    ]);
    assert_eq!(v["images"][0]["digest"], s.app.manifest.digest.to_string());
    assert_blobs_verified(&layout);
    let ranged: usize = s
        .app
        .blobs()
        .map(|b| {
            proxy
                .ranges("GET", &format!("/v2/team/app/blobs/{}", b.digest))
                .len()
        })
        .sum();
    assert_eq!(
        ranged, 1,
        "exactly the broken blob was continued with Range"
    );
    proxy.clear();

    // A copy killed while a layer stalls half way: the partial stays, the final name is never
    // written, and the next run continues it.
    proxy.inject(Target::Blob, Fault::Stall, 100);
    let layout = s.tmp.path().join("killed");
    let partial = layout
        .join(".ferry-partial")
        .join(format!("sha256-{}", big.digest.hex()));
    let mut child = Command::new(ferry_bin())
        .args([
            "copy",
            "-q",
            "-j",
            "8",
            &format!("registry://{}/team/app:v1", proxy.host()),
            &format!("oci:{}:v1", layout.display()),
        ])
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .spawn()
        .unwrap();
    assert!(
        wait_until(std::time::Duration::from_secs(30), || {
            std::fs::metadata(&partial).is_ok_and(|m| m.len() > 0)
        }),
        "no partial appeared"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept > 0 && kept < big.bytes.len() as u64);
    assert!(!layout.join("blobs/sha256").join(big.digest.hex()).exists());
    assert!(!layout.join("index.json").exists());
    assert_blobs_verified(&layout);
    proxy.clear();
    let before = proxy.ranges("GET", &blob_path).len();
    let v = copy_json(&[
        &format!("registry://{}/team/app:v1", proxy.host()),
        &format!("oci:{}:v1", layout.display()),
    ]);
    assert_eq!(v["images"][0]["digest"], s.app.manifest.digest.to_string());
    assert!(v["images"][0]["bytes_resumed"].as_u64().unwrap() >= kept);
    let ranges = proxy.ranges("GET", &blob_path);
    assert_eq!(ranges.len(), before + 1);
    assert_eq!(ranges.last().unwrap(), &format!("bytes={kept}-"));
    assert_blobs_verified(&layout);
}

#[test]
fn a_corrupt_partial_is_fetched_again_whole() {
    let Some(s) = seeded() else { return };
    let layout = s.tmp.path().join("corrupt");
    let big = &s.app.layers[0];
    let partial = layout
        .join(".ferry-partial")
        .join(format!("sha256-{}", big.digest.hex()));
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
    // The right length of prefix with the wrong bytes, as a crash may leave behind.
    std::fs::write(&partial, vec![0xAA; big.bytes.len() / 2]).unwrap();
    let v = copy_json(&[
        &format!("registry://{}/team/app:v1", s.registry.host()),
        &format!("oci:{}:v1", layout.display()),
    ]);
    assert_eq!(v["images"][0]["digest"], s.app.manifest.digest.to_string());
    assert_eq!(v["images"][0]["bytes_resumed"], 0);
    assert_blobs_verified(&layout);
}

#[test]
fn bad_input_gets_one_clear_error_and_leaves_nothing() {
    let Some(s) = seeded() else { return };
    let host = s.registry.host();
    let out = s.tmp.path().join("out");
    let dst = format!("oci:{}", out.display());
    let err = failure(&["nope:/x", &dst]);
    assert!(err.contains("names no known transport"), "{err}");
    let err = failure(&["registry://UPPER/Case:v1", &dst]);
    assert!(err.contains("source"), "{err}");
    let err = failure(&[&format!("registry://{host}/team/missing:v1"), &dst]);
    assert!(err.contains("not found"), "{err}");
    let err = failure(&[&format!("registry://{host}/team/app:v1")]);
    assert!(err.contains("needs a source and a destination"), "{err}");
    assert!(!out.exists(), "a failed copy left {}", out.display());
    // A destination that cannot be created.
    let err = failure(&[
        &format!("registry://{host}/team/app:v1"),
        "oci:/proc/ferry-cannot-write-here",
    ]);
    assert!(err.contains("/proc/ferry-cannot-write-here"), "{err}");
    // dir: without unique_names holds one image.
    let list = s.tmp.path().join("l.txt");
    std::fs::write(&list, format!("registry://{host}/team/app:v1\n")).unwrap();
    let err = failure(&[
        "--from-file",
        list.to_str().unwrap(),
        &format!("dir:{}", out.display()),
    ]);
    assert!(err.contains("unique_names=true"), "{err}");
    assert!(!out.exists());
}

#[test]
fn a_wildcard_source_copies_every_image_it_names_and_nothing_else() {
    let Some(registry) = DockerRegistry::start() else {
        return;
    };
    let host = registry.host();
    let client = ferry_client::Registry::new(ferry_client::RegistryOptions {
        endpoint: format!("http://{host}"),
        ..Default::default()
    })
    .unwrap();
    // team/app-a..c:latest match; team/lib:latest (another name) and team/app-d (no `latest`)
    // must not be copied.
    let apps: Vec<(String, Image)> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                format!("team/app-{n}"),
                image(30 + i as u64, 2, 3000, "amd64"),
            )
        })
        .collect();
    let lib = image(40, 1, 2000, "amd64");
    let app_d = image(41, 1, 2000, "amd64");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        for (repo, img) in &apps {
            crate::info::push(&client, repo, "latest", img).await;
        }
        crate::info::push(&client, "team/lib", "latest", &lib).await;
        crate::info::push(&client, "team/app-d", "v1", &app_d).await;
    });
    let tmp = tempfile::tempdir().unwrap();
    let pattern = format!("registry://{host}/team/app-*:latest");

    // Into one OCI layout: an index.json entry per image, named by its source.
    let layout = tmp.path().join("layout");
    let v = copy_json(&[&pattern, &format!("oci:{}", layout.display())]);
    let sources: Vec<&str> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["source"].as_str().unwrap())
        .collect();
    let want: Vec<String> = apps
        .iter()
        .map(|(r, _)| format!("registry://{host}/{r}:latest"))
        .collect();
    assert_eq!(sources, want);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut entries: Vec<(String, String)> = index["manifests"]
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
    entries.sort();
    let want: Vec<(String, String)> = apps
        .iter()
        .map(|(r, img)| {
            (
                format!("{host}/{r}:latest"),
                img.manifest.digest.to_string(),
            )
        })
        .collect();
    assert_eq!(entries, want);
    assert_blobs_verified(&layout);
    let blobs = layout.join("blobs/sha256");
    for decoy in [&lib, &app_d] {
        assert!(
            !blobs.join(decoy.manifest.digest.hex()).exists(),
            "a decoy was copied"
        );
    }

    // Into dir:…?unique_names=true: the same three names.
    let dir = tmp.path().join("many");
    copy_json(&[
        &pattern,
        &format!("dir:{}?unique_names=true", dir.display()),
    ]);
    let catalog: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("images.json")).unwrap()).unwrap();
    let mut names: Vec<&str> = catalog["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    names.sort();
    let want: Vec<String> = apps
        .iter()
        .map(|(r, _)| format!("{host}/{r}:latest"))
        .collect();
    assert_eq!(names, want);

    // A --from-file line may be a pattern too.
    let list = tmp.path().join("list.txt");
    std::fs::write(
        &list,
        format!("{pattern}\nregistry://{host}/team/lib:latest\n"),
    )
    .unwrap();
    let listed = tmp.path().join("listed");
    let v = copy_json(&[
        "--from-file",
        list.to_str().unwrap(),
        &format!("oci:{}", listed.display()),
    ]);
    let sources: Vec<&str> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["source"].as_str().unwrap())
        .collect();
    let mut want: Vec<String> = apps
        .iter()
        .map(|(r, _)| format!("registry://{host}/{r}:latest"))
        .collect();
    want.push(format!("registry://{host}/team/lib:latest"));
    assert_eq!(sources, want);

    // A pattern that names nothing is an error naming it, and writes nothing.
    let none = format!("registry://{host}/team/nothing-*:latest");
    let empty = tmp.path().join("empty");
    let err = failure(&[&none, &format!("oci:{}", empty.display())]);
    assert!(
        err.contains(&none) && err.contains("matches no image"),
        "{err}"
    );
    assert!(!empty.exists());
    // A single-image destination cannot take a wildcard's many images.
    let err = failure(&[
        &pattern,
        &format!("dir:{}", tmp.path().join("one").display()),
    ]);
    assert!(err.contains("unique_names=true"), "{err}");
}

#[test]
fn a_quay_wildcard_source_is_listed_through_its_rest_api_and_copied() {
    use crate::info::fake_quay;
    // org/app-a..c match `app-*`; org/lib and other/app-z must not be copied.
    let mut repos = std::collections::BTreeMap::new();
    for (seed, name) in [
        "org/app-a",
        "org/app-b",
        "org/app-c",
        "org/lib",
        "other/app-z",
    ]
    .into_iter()
    .enumerate()
    {
        let mut tags = std::collections::BTreeMap::new();
        tags.insert("v1".to_owned(), image(60 + seed as u64, 2, 1500, "amd64"));
        repos.insert(name.to_owned(), tags);
    }
    let state = std::sync::Arc::new(fake_quay::State::new(repos));
    let (host, _rt) = fake_quay::start(state.clone());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("apps");
    let pattern = format!("quay://{host}/org/app-*:v1");
    let dst = format!("dir:{}?unique_names=true", dir.display());

    let v = copy_json(&["--quay-token", "t0ken", &pattern, &dst]);
    let got: Vec<(&str, &str)> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["source"].as_str().unwrap(), i["digest"].as_str().unwrap()))
        .collect();
    let sources: Vec<String> = ["a", "b", "c"]
        .map(|r| format!("registry://{host}/org/app-{r}:v1"))
        .to_vec();
    let digests: Vec<String> = ["a", "b", "c"]
        .map(|r| {
            state.repos[&format!("org/app-{r}")]["v1"]
                .manifest
                .digest
                .to_string()
        })
        .to_vec();
    let want: Vec<(&str, &str)> = sources
        .iter()
        .zip(&digests)
        .map(|(s, d)| (s.as_str(), d.as_str()))
        .collect();
    assert_eq!(got, want);
    assert_blobs_verified(&dir);
    for decoy in ["org/lib", "other/app-z"] {
        let img = &state.repos[decoy]["v1"];
        assert!(
            !walk(&dir)
                .iter()
                .any(|p| p.file_name().unwrap().to_str().unwrap() == img.config.digest.hex()),
            "{decoy} was copied"
        );
    }
    // The listing went through Quay's REST API with the token.
    let seen = state.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|s| s.starts_with("/api/v1/repository?namespace=org")),
        "{seen:?}"
    );

    // Without the token Quay refuses; the error names the option that takes one.
    let mut cmd = Command::new(ferry_bin());
    let out = cmd
        .args([
            "copy",
            &pattern,
            &format!("dir:{}?unique_names=true", tmp.path().join("no").display()),
        ])
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .env_remove("FERRY_LOG")
        .env_remove("QUAY_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--quay-token"), "{err}");
    assert!(!tmp.path().join("no").exists());
}

#[test]
fn registry_to_registry_mounts_within_one_and_uploads_to_another() {
    let Some(s) = seeded() else { return };
    let host = s.registry.host();
    let src = format!("registry://{host}/team/app:v1");
    // Within one registry: every blob is mounted, nothing is transferred.
    let v = copy_json(&[&src, &format!("registry://{host}/elsewhere/app:v2")]);
    assert_eq!(v["images"][0]["blobs_mounted"], 4);
    assert_eq!(v["images"][0]["bytes_copied"], 0);
    assert_eq!(
        sha(&s.skopeo.raw(&format!("docker://{host}/elsewhere/app:v2"))),
        s.app.manifest.digest
    );
    // To another registry: uploaded, byte for byte; a second time, all present.
    let Some(second) = DockerRegistry::start() else {
        return;
    };
    let dst = format!("registry://{}/copied/app:v1", second.host());
    let v = copy_json(&[&src, &dst]);
    assert_eq!(v["images"][0]["blobs_copied"], 4);
    assert_eq!(
        sha(&s
            .skopeo
            .raw(&format!("docker://{}/copied/app:v1", second.host()))),
        s.app.manifest.digest
    );
    let v = copy_json(&[&src, &dst]);
    assert_eq!(v["images"][0]["blobs_present"], 4);
    // An index whole, from a layout.
    let layout = s.tmp.path().join("multi");
    copy_json(&[
        "--all-platforms",
        &format!("registry://{host}/team/multi:v1"),
        &format!("oci:{}:m", layout.display()),
    ]);
    let v = copy_json(&[
        "--all-platforms",
        &format!("oci:{}:m", layout.display()),
        &format!("registry://{}/copied/multi:v1", second.host()),
    ]);
    assert_eq!(v["images"][0]["digest"], s.idx.digest.to_string());
    assert_eq!(
        sha(&s
            .skopeo
            .raw(&format!("docker://{}/copied/multi:v1", second.host()))),
        s.idx.digest
    );
}

#[test]
fn a_push_opens_each_upload_while_the_source_blob_is_still_on_its_way() {
    let Some(s) = seeded() else { return };
    let Some(second) = DockerRegistry::start_logged() else {
        return;
    };
    // Every blob GET of the source is held until released: only a copy that sends each `POST`
    // without waiting for the source's answer gets its uploads opened meanwhile.
    let proxy = FaultProxy::start(&s.registry.host());
    let blobs = s.app.layers.len() + 1;
    proxy.inject(Target::Blob, Fault::Held, blobs);
    let mut copy = Command::new(ferry_bin())
        .args([
            "copy",
            "--quiet",
            "-j",
            "8",
            &format!("registry://{}/team/app:v1", proxy.host()),
            &format!("registry://{}/copied/app:v1", second.host()),
        ])
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .env_remove("FERRY_LOG")
        .spawn()
        .unwrap();
    let posts = || {
        second
            .process
            .log()
            .matches("\"POST /v2/copied/app/blobs/uploads/ ")
            .count()
    };
    wait_until(std::time::Duration::from_secs(20), || posts() >= blobs);
    let opened = posts();
    proxy.release();
    let status = copy.wait().unwrap();
    assert_eq!(
        opened, blobs,
        "uploads opened while the source's blobs were held"
    );
    assert!(status.success());
    assert_eq!(
        sha(&s
            .skopeo
            .raw(&format!("docker://{}/copied/app:v1", second.host()))),
        s.app.manifest.digest
    );
}

#[test]
fn archives_written_by_ferry_are_read_by_skopeo_and_read_back_with_the_same_digests() {
    let Some(s) = seeded() else { return };
    let host = s.registry.host();
    let src = format!("registry://{host}/team/app:v1");
    // docker-archive: skopeo reads it (as docker load would), layers as they were.
    let tar = s.tmp.path().join("app-docker.tar");
    copy_json(&[&src, &format!("docker-archive:{}", tar.display())]);
    assert!(!crate::copy::staging_of(&tar).exists());
    let via_skopeo = s.tmp.path().join("via-skopeo");
    s.skopeo.run(&[
        "copy",
        &format!("docker-archive:{}", tar.display()),
        &format!("dir:{}", via_skopeo.display()),
    ]);
    // skopeo hands docker-archive layers out uncompressed, so compare what survives that: the
    // config, byte for byte, and the number of layers.
    assert_eq!(
        std::fs::read(via_skopeo.join(s.app.config.digest.hex())).unwrap(),
        s.app.config.bytes
    );
    let seen: serde_json::Value =
        serde_json::from_slice(&std::fs::read(via_skopeo.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(seen["layers"].as_array().unwrap().len(), s.app.layers.len());
    // ferry reads its own archive back with the registry's manifest digest.
    let back = s.tmp.path().join("back");
    let v = copy_json(&[
        &format!("docker-archive:{}", tar.display()),
        &format!("oci:{}:v1", back.display()),
    ]);
    assert_eq!(v["images"][0]["digest"], s.app.manifest.digest.to_string());

    // oci-archive, named: skopeo sees the registry's manifest bytes.
    let otar = s.tmp.path().join("app-oci.tar");
    copy_json(&[&src, &format!("oci-archive:{}:v1", otar.display())]);
    let raw = s.skopeo.run(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}:v1", otar.display()),
    ]);
    assert_eq!(sha(raw.as_bytes()), s.app.manifest.digest);

    // An archive skopeo wrote is read by ferry and pushed with the same digest.
    let theirs = s.tmp.path().join("theirs-oci.tar");
    s.skopeo.copy(
        &format!("docker://{host}/team/app:v1"),
        &format!("oci-archive:{}:x", theirs.display()),
        &[],
    );
    let v = copy_json(&[
        &format!("oci-archive:{}:x", theirs.display()),
        &format!("registry://{host}/from/archive:v1"),
    ]);
    assert_eq!(v["images"][0]["digest"], s.app.manifest.digest.to_string());

    // A docker-archive holds one platform: an index is refused, and no file is left.
    let multi = s.tmp.path().join("multi.tar");
    let err = failure(&[
        "--all-platforms",
        &format!("registry://{host}/team/multi:v1"),
        &format!("docker-archive:{}", multi.display()),
    ]);
    assert!(err.contains("one platform"), "{err}");
    assert!(!multi.exists());
    // A truncated archive is one error.
    let cut = s.tmp.path().join("cut.tar");
    let bytes = std::fs::read(&tar).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let err = failure(&[
        &format!("docker-archive:{}", cut.display()),
        &format!("oci:{}", s.tmp.path().join("nothing").display()),
    ]);
    assert!(err.contains("cut.tar"), "{err}");
    assert!(!s.tmp.path().join("nothing").exists());
}

/// Where `ferry copy` stages an archive destination while it copies.
pub fn staging_of(file: &Path) -> std::path::PathBuf {
    let mut name = file.file_name().unwrap().to_owned();
    name.push(".ferry-partial");
    file.with_file_name(name)
}

#[test]
fn many_images_into_a_registry_keep_their_paths_under_the_destination() {
    let Some(s) = seeded() else { return };
    let host = s.registry.host();
    let list = s.tmp.path().join("list.txt");
    std::fs::write(
        &list,
        format!("registry://{host}/team/app:v1\nregistry://{host}/team/other:v1\n"),
    )
    .unwrap();
    let v = copy_json(&[
        "--from-file",
        list.to_str().unwrap(),
        &format!("registry://{host}/copies"),
    ]);
    assert_eq!(v["images"].as_array().unwrap().len(), 2);
    assert_eq!(
        sha(&s.skopeo.raw(&format!("docker://{host}/copies/team/app:v1"))),
        s.app.manifest.digest
    );
    assert_eq!(
        sha(&s
            .skopeo
            .raw(&format!("docker://{host}/copies/team/other:v1"))),
        s.other.manifest.digest
    );
}

#[test]
fn a_layer_cache_serves_blobs_a_second_copy_would_fetch_again() {
    let Some(s) = seeded() else { return };
    let proxy = FaultProxy::start(&s.registry.host());
    let src = format!("registry://{}/team/app:v1", proxy.host());
    let cache = s.tmp.path().join("cache");
    let cache_arg = cache.to_str().unwrap();
    let v = copy_json(&[
        "--layer-cache",
        cache_arg,
        &src,
        &format!("oci:{}:v1", s.tmp.path().join("first").display()),
    ]);
    assert_eq!(v["images"][0]["blobs_copied"], 4);
    let fetched = |p: &FaultProxy| -> usize {
        s.app
            .blobs()
            .map(|b| p.requests("GET", &format!("/v2/team/app/blobs/{}", b.digest)))
            .sum()
    };
    assert_eq!(fetched(&proxy), 4);
    // A fresh destination: every blob comes from the cache, none from the registry.
    let second = s.tmp.path().join("second");
    let v = copy_json(&[
        "--layer-cache",
        cache_arg,
        &src,
        &format!("dir:{}", second.display()),
    ]);
    assert_eq!(v["images"][0]["blobs_cached"], 4);
    assert_eq!(fetched(&proxy), 4, "the second copy fetched blobs again");
    for b in s.app.blobs() {
        assert_eq!(std::fs::read(second.join(b.digest.hex())).unwrap(), b.bytes);
    }
    assert_blobs_verified(&cache);
}

#[test]
fn a_manifest_with_more_layers_than_any_image_has_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let config = Blob::new("application/vnd.oci.image.config.v1+json", b"{}".to_vec());
    let layer = |i: usize| {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": Digest::sha256(format!("layer {i}").as_bytes()).to_string(),
            "size": 1,
        })
    };
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config.descriptor(),
        "layers": (0..1001).map(layer).collect::<Vec<_>>(),
    });
    let manifest = Blob::new(
        "application/vnd.oci.image.manifest.v1+json",
        serde_json::to_vec(&manifest).unwrap(),
    );
    let layout = tmp.path().join("huge");
    ferry_testkit::image::write_layout(&layout, &[&config], &[("x", &manifest)]).unwrap();
    let out = tmp.path().join("out");
    let err = failure(&[
        &format!("oci:{}:x", layout.display()),
        &format!("dir:{}", out.display()),
    ]);
    assert!(
        err.contains("1001 layers") && err.contains("at most 1000"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn dest_compress_converts_the_layers_and_the_summary_says_so() {
    let Some(s) = seeded() else { return };
    let host = s.registry.host();
    let src = format!("registry://{host}/team/app:v1");
    let layout = s.tmp.path().join("zstd");
    let dst = format!("oci:{}:v1", layout.display());
    let v = copy_json(&["--dest-compress", "zstd", &src, &dst]);
    let image = &v["images"][0];
    assert_eq!(image["blobs_recompressed"], 3);
    assert_eq!(image["blobs_copied"], 4);
    assert_ne!(image["digest"], s.app.manifest.digest.to_string());
    // The digest reported is the manifest the layout holds, and its layers are zstd.
    let raw = s.skopeo.run(&["inspect", "--raw", &dst]);
    assert_eq!(image["digest"], sha(raw.as_bytes()).to_string());
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }
    assert_blobs_verified(&layout);

    // The summary line counts the conversions; keep (the default) converts nothing.
    let out = ferry(&[
        "copy",
        "--dest-compress",
        "gzip",
        &dst,
        &format!("oci:{}:v1", s.tmp.path().join("gzip").display()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("3 layers recompressed"), "{err}");
    let v = copy_json(&[
        &src,
        &format!("oci:{}:v1", s.tmp.path().join("keep").display()),
    ]);
    assert_eq!(v["images"][0]["blobs_recompressed"], 0);
    assert_eq!(v["images"][0]["digest"], s.app.manifest.digest.to_string());

    let err = failure(&["--dest-compress", "zip", &src, &dst]);
    assert!(err.contains("expected keep, gzip or zstd"), "{err}");
}

/// A gzip archive source that unpacks past `--max-unpacked` is one error naming `ferry copy`'s own
/// option (not another command's), leaving nothing; a larger limit reads it, and so does the
/// default (100 times the archive's size).
#[test]
fn a_gzip_archive_past_the_unpacked_limit_names_ferry_copy_s_option() {
    let tmp = tempfile::tempdir().unwrap();
    let app = image(31, 2, 1 << 20, "amd64");
    let layout = tmp.path().join("layout");
    ferry_testkit::image::write_layout(
        &layout,
        &app.blobs().collect::<Vec<_>>(),
        &[("v1", &app.manifest)],
    )
    .unwrap();
    let tar = tmp.path().join("app.tar");
    copy_json(&[
        &format!("oci:{}:v1", layout.display()),
        &format!("oci-archive:{}:v1", tar.display()),
    ]);
    let gz = tmp.path().join("app.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    std::io::copy(&mut std::fs::File::open(&tar).unwrap(), &mut enc).unwrap();
    enc.finish().unwrap();
    let source = format!("oci-archive:{}:v1", gz.display());

    let out = tmp.path().join("out");
    let dst = format!("oci:{}:v1", out.display());
    let err = failure(&["--max-unpacked", "1MiB", &source, &dst]);
    assert!(
        err.contains("unpacks to more than 1048576 bytes")
            && err.contains("`ferry copy --max-unpacked SIZE`")
            && !err.contains("preload"),
        "{err}"
    );
    assert!(!out.exists(), "a failed copy left {}", out.display());

    for limit in [&["--max-unpacked", "8MiB"][..], &[]] {
        let v = copy_json(&[limit, &[source.as_str(), dst.as_str()]].concat());
        assert_eq!(v["images"][0]["digest"], app.manifest.digest.to_string());
        std::fs::remove_dir_all(&out).unwrap();
    }
}
