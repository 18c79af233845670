//! Seeding the cache from image archives written by real tools (skopeo's `oci-archive` and
//! `docker-archive`, an OCI layout directory), gzip-compressed too: an offline ferry then serves
//! them to skopeo under the names the archives give, with the same bytes.

use std::io::{Read as _, Seek as _, Write as _};
use std::path::Path;
use std::process::Command;

use ferry_testkit::image::{image, index, write_layout};
use ferry_testkit::peers::{Ferry, Skopeo};

use crate::ferry_bin;

/// An upstream name that nothing answers on: the imported images must come from the cache.
const UPSTREAM: &str = "127.0.0.1:9";

fn ferry(args: &[&str]) -> std::process::Output {
    Command::new(ferry_bin()).args(args).output().unwrap()
}

fn gzip(from: &Path, to: &Path) {
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(to).unwrap(),
        flate2::Compression::fast(),
    );
    std::io::copy(&mut std::fs::File::open(from).unwrap(), &mut gz).unwrap();
    gz.finish().unwrap();
}

/// The manifest of `reference` as skopeo pulls it from `ferry` (the only upstream is the default;
/// `host:port` cannot be an in-path namespace in a docker reference).
fn pulled_manifest(skopeo: &Skopeo, ferry: &Ferry, reference: &str) -> serde_json::Value {
    let raw = skopeo.raw(&format!("docker://{}/{reference}", ferry.host()));
    serde_json::from_slice(&raw).unwrap()
}

#[test]
fn archives_from_skopeo_seed_an_offline_cache() {
    let Some(skopeo) = Skopeo::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(61, 2, 64 * 1024, "amd64");
    let layout = tmp.path().join("layout");
    write_layout(
        &layout,
        &img.blobs().collect::<Vec<_>>(),
        &[("v1", &img.manifest)],
    )
    .unwrap();
    let src = format!("oci:{}:v1", layout.display());
    let oci_tar = tmp.path().join("app-oci.tar");
    skopeo.copy(&src, &format!("oci-archive:{}:v1", oci_tar.display()), &[]);
    let docker_tar = tmp.path().join("app-docker.tar");
    skopeo.copy(
        &src,
        &format!(
            "docker-archive:{}:{UPSTREAM}/d/app:v2",
            docker_tar.display()
        ),
        &[],
    );
    let docker_gz = tmp.path().join("app-docker.tar.gz");
    gzip(&docker_tar, &docker_gz);
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let up = format!("http://{UPSTREAM}");

    // skopeo names the image only by its tag in an oci-archive: ferry asks for a repository.
    let out = ferry(&[
        "preload",
        "--data-dir",
        d,
        "--upstream",
        &up,
        oci_tar.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--name") && err.contains("tag v1"), "{err}");
    // A name whose registry is not an upstream is refused, and says which are.
    let out = ferry(&[
        "preload",
        "--data-dir",
        d,
        "--upstream",
        &up,
        "--name",
        "quay.io/o/app:v1",
        oci_tar.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("quay.io") && err.contains(UPSTREAM), "{err}");

    let name = format!("{UPSTREAM}/o/app:v1");
    let out = ferry(&[
        "preload",
        "--data-dir",
        d,
        "--upstream",
        &up,
        "--name",
        &name,
        oci_tar.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("1 manifest, 3 blobs"), "{said}");
    // The OCI layout directory, renamed; its blobs are in the store already.
    let out = ferry(&[
        "preload",
        "--data-dir",
        d,
        "--upstream",
        &up,
        "--name",
        &format!("{UPSTREAM}/l/app:v1"),
        layout.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("(0 bytes new)"));

    // The gzip docker-save archive through `serve --preload`, with the name saved in it.
    let server = Ferry::start(
        ferry_bin(),
        &data,
        &[
            "--offline",
            "--upstream",
            &up,
            "--preload",
            docker_gz.to_str().unwrap(),
        ],
    );
    let m = pulled_manifest(&skopeo, &server, "o/app:v1");
    assert_eq!(
        skopeo.raw(&format!("docker://{}/o/app:v1", server.host())),
        img.manifest.bytes,
        "the OCI archive's manifest is served byte for byte"
    );
    assert_eq!(m["config"]["digest"], img.config.digest.as_str());
    let l = pulled_manifest(&skopeo, &server, "l/app:v1");
    assert_eq!(l, m);
    // docker save keeps the config and layer bytes but not the registry manifest: ferry writes one.
    let dm = pulled_manifest(&skopeo, &server, "d/app:v2");
    assert_eq!(dm["config"]["digest"], img.config.digest.as_str());
    assert_eq!(dm["layers"].as_array().unwrap().len(), img.layers.len());
    // And skopeo copies the whole image out of the offline cache (every blob digest-checked).
    let out_dir = tmp.path().join("pulled");
    skopeo.copy(
        &format!("docker://{}/d/app:v2", server.host()),
        &format!("oci:{}:v2", out_dir.display()),
        &[],
    );
    let fsck = ferry(&["fsck", "--data-dir", d]);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_platform_filter_keeps_the_chosen_children() {
    let tmp = tempfile::tempdir().unwrap();
    let amd = image(62, 1, 4096, "amd64");
    let arm = image(63, 1, 4096, "arm64");
    let idx = index(&[(&amd, "amd64"), (&arm, "arm64")]);
    let layout = tmp.path().join("layout");
    let blobs: Vec<_> = amd
        .blobs()
        .chain(arm.blobs())
        .chain([&amd.manifest, &arm.manifest])
        .collect();
    write_layout(&layout, &blobs, &[(&format!("{UPSTREAM}/m/app:v1"), &idx)]).unwrap();
    let data = tmp.path().join("data");
    let out = ferry(&[
        "preload",
        "--data-dir",
        data.to_str().unwrap(),
        "--upstream",
        &format!("http://{UPSTREAM}"),
        "--platform",
        "linux/arm64",
        layout.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("2 manifests, 2 blobs"),
        "index + arm64 child: {said}"
    );
    let up = format!("http://{UPSTREAM}");
    let server = Ferry::start(ferry_bin(), &data, &["--offline", "--upstream", &up]);
    let status = |path: String| {
        let url = format!("{}/v2/{UPSTREAM}/m/app/{path}", server.url());
        async move {
            crate::client()
                .get(url)
                .header("accept", ferry_oci::MediaType::ACCEPT_ALL)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("manifests/v1".into()).await, 200);
    assert_eq!(
        status(format!("manifests/{}", arm.manifest.digest)).await,
        200
    );
    assert_eq!(status(format!("blobs/{}", arm.layers[0].digest)).await, 200);
    assert_eq!(
        status(format!("manifests/{}", amd.manifest.digest)).await,
        404
    );
    assert_eq!(status(format!("blobs/{}", amd.layers[0].digest)).await, 404);
}

// ---- Hostile archives: each must end in a clear error (or a correct import) within a memory and
// time bound, never exhaust the machine or hang `serve --preload`.

/// Address space for one hostile `ferry preload`: the binary itself needs far less; the old code
/// needed several times more for these archives. Thread stacks (2 MiB each) and malloc arenas count
/// toward RLIMIT_DATA, so the child runs with a fixed number of each ([`ferry_bounded`]): with one
/// worker per CPU, a 128-core machine would spend the whole bound on stacks.
const MEMORY_BOUND: u64 = 256 << 20;
/// Wall-clock bound for one hostile `ferry preload`.
const TIME_BOUND: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `ferry args…` under `prlimit` (data segment ≤ [`MEMORY_BOUND`], files written ≤
/// `file_size`, TMPDIR `tmp`) and kills it after [`TIME_BOUND`]: a bomb that wins fails the test
/// instead of the machine.
fn ferry_bounded(args: &[&str], tmp: &Path, file_size: u64) -> std::process::Output {
    let child = Command::new("prlimit")
        .arg(format!("--data={MEMORY_BOUND}"))
        .arg(format!("--fsize={file_size}"))
        .arg("--")
        .arg(ferry_bin())
        .args(args)
        .env("TMPDIR", tmp)
        // What ferry's memory takes beyond its work must not grow with the machine's cores (tokio
        // starts a worker per core; glibc allows 8 arenas per core).
        .env("TOKIO_WORKER_THREADS", "2")
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("prlimit (util-linux) runs ferry");
    // prlimit execs ferry in place, so this is ferry's PID.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(TIME_BOUND) {
        Ok(out) => out.expect("waiting for ferry"),
        Err(_) => {
            // Not reaped yet (the waiting thread still holds it), so the PID is still ferry's.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("ferry {args:?} was still running after {TIME_BOUND:?}");
        }
    }
}

/// `ferry preload` of `archive` into a fresh data directory under `dir`, bounded (files it writes
/// ≤ 128 MiB).
fn preload_bounded(dir: &Path, archive: &Path, extra: &[&str]) -> std::process::Output {
    preload_bounded_fsize(dir, archive, extra, 128 << 20)
}

fn preload_bounded_fsize(
    dir: &Path,
    archive: &Path,
    extra: &[&str],
    file_size: u64,
) -> std::process::Output {
    let data = dir.join("data");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let up = format!("http://{UPSTREAM}");
    let mut args = vec![
        "preload",
        "--data-dir",
        data.to_str().unwrap(),
        "--upstream",
        &up,
    ];
    args.extend_from_slice(extra);
    args.push(archive.to_str().unwrap());
    let out = ferry_bounded(&args, &tmp, file_size);
    // A failed import leaves no decompressed copy behind.
    let left = std::fs::read_dir(&tmp).unwrap().count();
    assert_eq!(left, 0, "TMPDIR not cleaned: {}", stderr(&out));
    out
}

fn stderr(out: &std::process::Output) -> String {
    format!(
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An OCI layout of one image whose first layer is a FIFO with no writer.
fn layout_with_fifo(dir: &Path) -> ferry_testkit::image::Image {
    let img = image(64, 2, 1024, "amd64");
    write_layout(
        dir,
        &img.blobs().collect::<Vec<_>>(),
        &[("v1", &img.manifest)],
    )
    .unwrap();
    let layer = dir.join("blobs/sha256").join(img.layers[0].digest.hex());
    std::fs::remove_file(&layer).unwrap();
    let made = Command::new("mkfifo").arg(&layer).status().unwrap();
    assert!(made.success());
    img
}

#[test]
fn archive_fifo_in_a_layout_is_refused_not_waited_on() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let img = layout_with_fifo(&layout);
    let name = format!("{UPSTREAM}/f/app:v1");
    let out = preload_bounded(tmp.path(), &layout, &["--name", &name]);
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(img.layers[0].digest.hex()) && err.contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    // A FIFO given as the item itself is not opened to sniff it either.
    let fifo = tmp.path().join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let out = preload_bounded(&tmp.path().join("2"), &fifo, &[]);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn serve_preload_of_a_layout_with_a_fifo_still_listens() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let img = layout_with_fifo(&layout);
    // The layout is imported from a copy renamed by index.json, since serve has no --name.
    let index = std::fs::read_to_string(layout.join("index.json")).unwrap();
    std::fs::write(
        layout.join("index.json"),
        index.replace("\"v1\"", &format!("\"{UPSTREAM}/f/app:v1\"")),
    )
    .unwrap();
    // Ferry::start fails the test if the server does not listen within its start-up bound.
    let server = Ferry::start(
        ferry_bin(),
        &tmp.path().join("data"),
        &[
            "--offline",
            "--upstream",
            &format!("http://{UPSTREAM}"),
            "--preload",
            layout.to_str().unwrap(),
        ],
    );
    let log = server.process.log();
    assert!(
        log.contains(img.layers[0].digest.hex()) && log.contains("not a regular file"),
        "{log}"
    );
}

/// A GNU tar header block: `typeflag`, `name`, data `size`.
fn tar_header(typeflag: u8, name: &[u8], size: u64) -> [u8; 512] {
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(tar::EntryType::new(typeflag));
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    *h.as_bytes()
}

/// Writes `n` bytes of `byte` to `w`.
fn fill(w: &mut impl std::io::Write, byte: u8, n: u64) {
    std::io::copy(&mut std::io::repeat(byte).take(n), w).unwrap();
}

#[test]
fn archive_long_name_bomb_is_refused_before_it_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    // 128 KiB of gzip: a GNU long name of 128 MiB, then the member it would name.
    let bomb = tmp.path().join("longname.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&bomb).unwrap(),
        flate2::Compression::best(),
    );
    let name_len: u64 = 128 << 20;
    gz.write_all(&tar_header(b'L', b"././@LongLink", name_len))
        .unwrap();
    fill(&mut gz, b'a', name_len);
    gz.write_all(&tar_header(b'0', b"x", 0)).unwrap();
    gz.write_all(&[0; 1024]).unwrap();
    gz.finish().unwrap();
    assert!(std::fs::metadata(&bomb).unwrap().len() < 512 << 10);

    // Room on disk for a decompressed copy: memory is what this bounds.
    let out = preload_bounded_fsize(tmp.path(), &bomb, &[], 512 << 20);
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("long name") && err.contains(&name_len.to_string()) && err.contains("65536"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn archive_pax_bomb_is_refused_before_it_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    // A plain tar whose PAX extension header claims 200 MiB of records (sparse on disk).
    let bomb = tmp.path().join("pax.tar");
    let mut f = std::fs::File::create(&bomb).unwrap();
    let pax_len: u64 = 200 << 20;
    f.write_all(&tar_header(b'x', b"PaxHeaders/x", pax_len))
        .unwrap();
    f.write_all(b"30 path=aaaaaaaaaaaaaaaaaaaaa\n").unwrap();
    f.set_len(512 + pax_len.div_ceil(512) * 512).unwrap();
    f.seek(std::io::SeekFrom::End(0)).unwrap();
    f.write_all(&tar_header(b'0', b"x", 0)).unwrap();
    f.write_all(&[0; 1024]).unwrap();
    drop(f);

    let out = preload_bounded(tmp.path(), &bomb, &[]);
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PAX") && err.contains(&pax_len.to_string()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn archive_gzip_bomb_stops_at_the_unpacked_limit() {
    let tmp = tempfile::tempdir().unwrap();
    // ~250 KiB of gzip that unpacks to a 256 MiB member of zeros: more than 100× and 64 MiB.
    let bomb = tmp.path().join("zeros.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&bomb).unwrap(),
        flate2::Compression::best(),
    );
    let size: u64 = 256 << 20;
    gz.write_all(&tar_header(b'0', b"blobs/sha256/zeros", size))
        .unwrap();
    fill(&mut gz, 0, size);
    gz.write_all(&[0; 1024]).unwrap();
    gz.finish().unwrap();
    assert!(std::fs::metadata(&bomb).unwrap().len() < 512 << 10);

    let out = preload_bounded(tmp.path(), &bomb, &[]);
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unpacks to more than 67108864 bytes") && err.contains("--max-unpacked"),
        "{}",
        stderr(&out)
    );
    // The limit is the user's to set.
    let out = preload_bounded(tmp.path(), &bomb, &["--max-unpacked", "1MiB"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unpacks to more than 1048576 bytes"),
        "{}",
        stderr(&out)
    );
}

/// A plain docker-save tar: `manifest.json` and files.
fn docker_save(path: &Path, manifest: &serde_json::Value, files: &[(&str, &[u8])]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let json = serde_json::to_vec(manifest).unwrap();
    for (name, bytes) in
        std::iter::once(("manifest.json", json.as_slice())).chain(files.iter().copied())
    {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, bytes).unwrap();
    }
    b.finish().unwrap();
}

#[test]
fn archive_repeated_tags_and_layers_import_once() {
    let tmp = tempfile::tempdir().unwrap();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let files: [(&str, &[u8]); 2] = [("c.json", config), ("l.tar", &[7u8; 4096])];
    // One entry naming one image 1,000 times over, with one layer 1,000 times (the limit): the old
    // code hashed the layer 1,000 times and linked a million blobs.
    let tag = format!("{UPSTREAM}/q/app:v1");
    let n = 1000;
    let archive = tmp.path().join("repeated.tar");
    docker_save(
        &archive,
        &serde_json::json!([{"Config": "c.json", "RepoTags": vec![&tag; n], "Layers": vec!["l.tar"; n]}]),
        &files,
    );
    let out = preload_bounded(tmp.path(), &archive, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("1 manifest, 2 blobs"), "{}", stderr(&out));

    // 1,000 copies of an entry, under 100 tags: each name → manifest pair once.
    let tags: Vec<String> = (0..100).map(|i| format!("{UPSTREAM}/q/app:t{i}")).collect();
    let entry = serde_json::json!({"Config": "c.json", "RepoTags": tags, "Layers": ["l.tar"]});
    let archive = tmp.path().join("entries.tar");
    docker_save(
        &archive,
        &serde_json::Value::Array(vec![entry; 1000]),
        &files,
    );
    let out = preload_bounded(&tmp.path().join("2"), &archive, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("100 manifests, 2 blobs"), "{}", stderr(&out));

    // Past the per-image layer limit: refused, saying so.
    let archive = tmp.path().join("layers.tar");
    docker_save(
        &archive,
        &serde_json::json!([{"Config": "c.json", "RepoTags": [&tag], "Layers": vec!["l.tar"; 1001]}]),
        &files,
    );
    let out = preload_bounded(&tmp.path().join("3"), &archive, &[]);
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1001 layers") && err.contains("1000"),
        "{}",
        stderr(&out)
    );
}

/// The digest of `bytes`, as a layout names its blob.
fn sha256(bytes: &[u8]) -> ferry_oci::Digest {
    ferry_oci::Digest::of(ferry_oci::Algorithm::Sha256, bytes)
}

#[test]
fn archive_index_of_many_manifests_is_refused_as_they_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    // 1,100 distinct manifests of 1,000 layers (the limit) each, about 130 KB apiece: the old code
    // parsed every one (560 MiB at its peak) before counting their 1.1 million blob links.
    let n = 1100;
    let layout = tmp.path().join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let layer = format!(
        r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":1}}"#,
        sha256(b"l")
    );
    let layers = vec![layer; 1000].join(",");
    let mut listed = Vec::new();
    for i in 0..n {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{i}}},"layers":[{layers}]}}"#,
            sha256(i.to_string().as_bytes())
        );
        let digest = sha256(manifest.as_bytes());
        std::fs::write(blobs.join(digest.hex()), &manifest).unwrap();
        listed.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest.as_str(),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": format!("{UPSTREAM}/m/app:t{i}")},
        }));
    }
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": listed})).unwrap(),
    )
    .unwrap();

    let out = preload_bounded(tmp.path(), &layout, &[]);
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("more than 128 MiB of memory") && err.contains("split the archive"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn archive_manifest_json_of_layer_permutations_is_refused_as_it_is_expanded() {
    let tmp = tempfile::tempdir().unwrap();
    // 990 entries (4 MiB of manifest.json), each a different order of two layer files 1,000 deep:
    // within every count limit, the old code wrote and parsed a million descriptors (575 MiB at
    // its peak).
    let files: [(&str, &[u8]); 3] = [("c", b"{}"), ("a", b"a"), ("b", b"b")];
    let entries: Vec<serde_json::Value> = (0..990u32)
        .map(|i| {
            let layers: Vec<&str> = (0..1000)
                .map(|bit| if bit < 32 && (i >> bit) & 1 == 1 { "b" } else { "a" })
                .collect();
            serde_json::json!({"Config": "c", "RepoTags": [format!("{UPSTREAM}/p/app:t{i}")], "Layers": layers})
        })
        .collect();
    let archive = tmp.path().join("permutations.tar");
    docker_save(&archive, &serde_json::Value::Array(entries), &files);

    let out = preload_bounded(tmp.path(), &archive, &[]);
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("more than 128 MiB of memory") && err.contains("split the archive"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn reference_list_of_many_short_lines_is_refused_as_it_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    // 64 MiB (the most a list may be) of one-letter references: the old code read it whole and
    // made 33 million strings and references of it (over 2 GB).
    let list = tmp.path().join("refs.txt");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&list).unwrap());
    for _ in 0..(64 << 20) / 2 {
        f.write_all(b"a\n").unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let out = ferry_bounded(
        &[
            "preload",
            "--mirror",
            "http://127.0.0.1:9",
            list.to_str().unwrap(),
        ],
        tmp.path(),
        1 << 20,
    );
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("more than 100000 references") && err.contains("line 100001"),
        "{}",
        stderr(&out)
    );
}
