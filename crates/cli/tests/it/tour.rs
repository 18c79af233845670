//! The docs run as written. The README's five-minute tour is read at test time and every command of
//! its `sh` block runs, in order, with bash in a temp dir; the only substitutions are the port (a
//! free one), the data directory (a temp dir), how `ferry` is found (the binary under test, first on
//! PATH; the build line is not run) and containerd (a private one, `ctr --address` its socket).
//! Every `ferry` command shown in README.md and docs/ must at least parse.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ferry_testkit::peers::{self, Containerd, Process};

use crate::ferry_bin;

/// The repository root, where README.md and docs/ are.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read_doc(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The command lines of the ```sh blocks in `markdown` (from `from_heading` on, and only its first
/// block if `first_only`): continuation lines joined, blank and comment-only lines left out.
fn sh_commands(markdown: &str, from_heading: Option<&str>, first_only: bool) -> Vec<String> {
    let text = match from_heading {
        Some(h) => {
            let at = markdown
                .find(h)
                .unwrap_or_else(|| panic!("no heading {h:?} in the README"));
            &markdown[at..]
        }
        None => markdown,
    };
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in text.lines() {
        let fence = line.trim_start().starts_with("```");
        if !in_block {
            in_block = fence && line.trim() == "```sh";
            continue;
        }
        if fence {
            assert!(pending.is_empty(), "a ```sh block ends in a continuation");
            if first_only {
                break;
            }
            in_block = false;
            continue;
        }
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    commands
}

/// PATH with the directory of the binary under test first: how the tests find `ferry`.
fn path_with_ferry() -> std::ffi::OsString {
    let bin_dir = ferry_bin().parent().expect("the binary has a directory");
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(bin_dir.to_owned()).chain(std::env::split_paths(&path)))
        .expect("PATH entries join")
}

/// Runs one command line with bash, exiting on the first failure inside it.
fn bash(line: &str, cwd: &Path) -> Output {
    Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", line])
        .current_dir(cwd)
        .env("PATH", path_with_ferry())
        .output()
        .expect("run bash")
}

/// The value after `flag` in a command line.
fn flag_value<'a>(line: &'a str, flag: &str) -> &'a str {
    let mut words = line.split_whitespace();
    words
        .by_ref()
        .find(|w| *w == flag)
        .and_then(|_| words.next())
        .unwrap_or_else(|| panic!("the tour's serve line has no {flag}: {line}"))
}

/// Whether `ferry` answers `GET /v2/` with 200 on 127.0.0.1:`port`.
fn v2_ok(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut answer = String::new();
    conn.write_all(request.as_bytes()).is_ok()
        && conn.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}

/// The tour's commands with the port, the data directory, `ferry` and `ctr` made the test's own.
struct Substitution {
    port_shown: String,
    port: String,
    data_dir_shown: String,
    data_dir: String,
    ctr: String,
}

impl Substitution {
    fn apply(&self, line: &str) -> String {
        let line = line
            .replace("cargo run --release --", "ferry")
            .replace(&self.port_shown, &self.port)
            .replace(&self.data_dir_shown, &self.data_dir);
        match line
            .strip_prefix("sudo ctr ")
            .or_else(|| line.strip_prefix("ctr "))
        {
            Some(rest) => format!("{} {rest}", self.ctr),
            None => line,
        }
    }
}

fn shown(what: &str, line: &str, out: &Output) -> String {
    format!(
        "{what}\n  {line}\nexit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn readme_tour_runs_as_written() {
    let readme = read_doc("README.md");
    let commands = sh_commands(&readme, Some("## A five-minute tour"), true);
    assert!(!commands.is_empty(), "the tour has no ```sh block");

    // The tour's own peers; the build line is the test's business (the binary under test is on PATH).
    if peers::require("skopeo").is_none() || peers::require("curl").is_none() {
        return;
    }
    let Some(containerd) = Containerd::start() else {
        return;
    };

    let (builds, commands): (Vec<_>, Vec<_>) =
        commands.into_iter().partition(|c| c.starts_with("cargo "));
    assert_eq!(
        builds.len(),
        1,
        "the tour must say how to build ferry and put it on the PATH, once: {builds:?}"
    );
    assert!(
        builds[0].contains("export PATH=") || builds[0].starts_with("cargo install "),
        "the tour's build line must put ferry on the PATH: {}",
        builds[0]
    );
    let serve_lines: Vec<&String> = commands.iter().filter(|c| c.ends_with('&')).collect();
    assert_eq!(
        serve_lines.len(),
        1,
        "the tour starts one server in the background: {serve_lines:?}"
    );
    let serve_line = serve_lines[0].clone();
    assert!(
        serve_line.contains(" serve "),
        "the background line is not `ferry serve`: {serve_line}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let data_dir = tmp.path().join("data");
    let port = peers::free_port();
    let subst = Substitution {
        port_shown: flag_value(&serve_line, "--listen").to_owned(),
        port: format!("127.0.0.1:{port}"),
        data_dir_shown: flag_value(&serve_line, "--data-dir").to_owned(),
        data_dir: data_dir.display().to_string(),
        ctr: format!("ctr --address {}", containerd.socket().display()),
    };
    assert!(
        subst.port_shown.starts_with("127.0.0.1:"),
        "the tour listens on {}, not on 127.0.0.1",
        subst.port_shown
    );
    assert!(
        commands
            .iter()
            .any(|c| c.starts_with("sudo ctr ") || c.starts_with("ctr ")),
        "the tour no longer pulls with containerd; update this test's substitutions"
    );

    // The server is a child stopped by PID; `exec` makes the PID ferry's own.
    let background = subst.apply(serve_line.trim_end_matches('&').trim_end());
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &format!("exec {background}")])
        .current_dir(&work)
        .env("PATH", path_with_ferry());
    let mut server = Process::spawn("ferry", cmd, &tmp.path().join("serve.log"));
    let ready = peers::wait_until(Duration::from_secs(30), || v2_ok(port) || !server.running());
    assert!(
        ready && server.running(),
        "`{background}` did not answer /v2/ on port {port}:\n{}",
        server.log()
    );

    for written in commands.iter().filter(|c| **c != serve_line) {
        let line = subst.apply(written);
        let out = bash(&line, &work);
        let failure = |why: &str| {
            format!(
                "{}\n(written in the README as `{written}`)\n--- server log\n{}",
                shown(why, &line, &out),
                server.log()
            )
        };
        assert!(
            out.status.success(),
            "{}",
            failure("a tour command failed:")
        );
        // `curl -s` exits 0 on a 404 too: an OCI error answer is a failed step all the same.
        let json: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
        assert!(
            json.as_ref().and_then(|j| j.get("errors")).is_none(),
            "{}",
            failure("a tour command got an OCI error:")
        );
    }

    assert!(
        server.running(),
        "ferry serve exited during the tour:\n{}",
        server.log()
    );
    let status = server.terminate(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "ferry serve did not stop cleanly on SIGTERM ({status:?}):\n{}",
        server.log()
    );
}

/// A `ferry` command line without what the shell does around it: a trailing comment, a
/// redirection, a background `&`.
fn without_shell_suffixes(line: &str) -> &str {
    let mut line = line;
    if let Some(at) = line.find(" #") {
        line = &line[..at];
    }
    if let Some(at) = line.find(" > ") {
        line = &line[..at];
    }
    line.trim_end().trim_end_matches('&').trim_end()
}

#[test]
fn every_ferry_command_in_the_docs_parses() {
    let mut docs = vec!["README.md".to_owned()];
    for entry in std::fs::read_dir(repo_root().join("docs")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            docs.push(format!("docs/{name}"));
        }
    }
    docs.sort();
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for doc in &docs {
        for written in sh_commands(&read_doc(doc), None, false) {
            // `cargo run --release -- serve` is the README's way to run ferry before it is installed.
            let written = written.replace("cargo run --release --", "ferry");
            // `VAR=value ferry …` is a ferry command too.
            let is_ferry = written
                .split_whitespace()
                .find(|w| !w.contains('='))
                .is_some_and(|w| w == "ferry");
            if !is_ferry {
                continue;
            }
            // `--help` after every argument: clap checks each flag name and value first, and
            // nothing runs, touches the disk or needs the network.
            let line = format!("{} --help", without_shell_suffixes(&written));
            let out = bash(&line, tmp.path());
            assert!(
                out.status.success(),
                "{}",
                shown(
                    &format!("{doc} shows a ferry command that does not parse:"),
                    &line,
                    &out
                )
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 20,
        "only {checked} ferry commands found in {docs:?}: is the extraction broken?"
    );
}
