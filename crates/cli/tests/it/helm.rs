//! The Helm chart in `deploy/helm/ferry`, rendered by the real `helm` for each supported shape and
//! checked against the Kubernetes API types (no cluster here): every document must deserialize into
//! its k8s-openapi type and serialize back to the same JSON, so a misspelt or misplaced field —
//! which the API server would reject or silently drop — fails the test. The manifests under
//! `deploy/k8s` are held to the same round trip, and the scripts they and the chart run on nodes
//! (containerd's hosts.toml, the rollout benchmark's pullers) are run here with `sh`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolumeClaim, PodSpec, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::ferry_bin;

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/ferry")
}

/// `helm template` with `--set` values; the documents, or helm's error.
fn render(helm: &Path, sets: &[&str]) -> Result<Vec<Value>, String> {
    render_with(helm, &[], sets)
}

/// `helm template` with values files (`-f`) and then `--set` values.
fn render_with(helm: &Path, files: &[&Path], sets: &[&str]) -> Result<Vec<Value>, String> {
    let mut cmd = Command::new(helm);
    cmd.args(["template", "rel"])
        .arg(chart())
        .args(["--namespace", "infra"]);
    for f in files {
        cmd.arg("-f").arg(f);
    }
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(documents(&String::from_utf8(out.stdout).unwrap()))
}

/// The YAML documents of a stream, empty ones left out.
fn documents(text: &str) -> Vec<Value> {
    text.split("\n---")
        .filter_map(|doc| {
            let v: Value = serde_yaml::from_str(doc).expect("YAML parses");
            (!v.is_null()).then_some(v)
        })
        .collect()
}

/// Nulls and empty objects are how the typed round trip spells "absent".
fn prune(v: &mut Value) {
    if let Value::Object(m) = v {
        m.values_mut().for_each(prune);
        m.retain(|_, x| !x.is_null() && x != &Value::Object(Default::default()));
    } else if let Value::Array(a) = v {
        a.iter_mut().for_each(prune);
    }
}

/// Deserializes `doc` as `T` and checks that nothing was lost on the way.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> T {
    let t: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{} does not fit its type: {e}\n{doc:#}", doc["kind"]));
    let mut back = serde_json::to_value(&t).unwrap();
    let mut want = doc.clone();
    prune(&mut back);
    prune(&mut want);
    assert_eq!(
        back, want,
        "{} has fields its type does not know",
        doc["kind"]
    );
    t
}

struct Rendered {
    pod: PodSpec,
    /// The pod template's labels.
    pod_labels: BTreeMap<String, String>,
    /// The workload's selector (matchLabels).
    selector: BTreeMap<String, String>,
    kind: String,
    config: String,
    /// The registry Service.
    service: Service,
    services: Vec<Service>,
    secrets: Vec<Secret>,
    kinds: Vec<String>,
}

impl Rendered {
    fn container(&self) -> &Container {
        &self.pod.containers[0]
    }

    fn args(&self) -> Vec<String> {
        self.container().args.clone().unwrap()
    }

    fn service(&self, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
    }

    fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
    }

    fn init_container(&self, name: &str) -> Option<&Container> {
        self.pod
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.name == name)
    }
}

/// The value after `flag` in `args`, if the flag is there.
fn arg_of(args: &[String], flag: &str) -> Option<String> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).cloned()
}

fn check(helm: &Path, sets: &[&str]) -> Rendered {
    check_with(helm, &[], sets)
}

fn check_with(helm: &Path, files: &[&Path], sets: &[&str]) -> Rendered {
    let docs = render_with(helm, files, sets)
        .unwrap_or_else(|e| panic!("helm template {files:?} {sets:?}: {e}"));
    let mut pod = None;
    let mut pod_labels = BTreeMap::new();
    let mut selector = BTreeMap::new();
    let mut kind = String::new();
    let mut config = None;
    let mut services = Vec::new();
    let mut secrets = Vec::new();
    let mut kinds = Vec::new();
    for doc in &docs {
        let k = doc["kind"].as_str().unwrap().to_owned();
        match k.as_str() {
            "DaemonSet" => {
                let d: DaemonSet = typed(doc);
                let spec = d.spec.unwrap();
                selector = spec.selector.match_labels.unwrap_or_default();
                pod_labels = spec
                    .template
                    .metadata
                    .and_then(|m| m.labels)
                    .unwrap_or_default();
                pod = spec.template.spec;
            }
            "Deployment" => {
                let d: Deployment = typed(doc);
                let spec = d.spec.unwrap();
                assert_eq!(
                    spec.strategy.unwrap().type_.as_deref(),
                    Some("Recreate"),
                    "two pods must never share a data directory"
                );
                selector = spec.selector.match_labels.unwrap_or_default();
                pod_labels = spec
                    .template
                    .metadata
                    .and_then(|m| m.labels)
                    .unwrap_or_default();
                pod = spec.template.spec;
            }
            "ConfigMap" => {
                let c: ConfigMap = typed(doc);
                config = c.data.unwrap().remove("ferry.toml");
            }
            "Service" => services.push(typed::<Service>(doc)),
            "Secret" => secrets.push(typed::<Secret>(doc)),
            "PersistentVolumeClaim" => {
                typed::<PersistentVolumeClaim>(doc);
            }
            "ServiceMonitor" => {
                assert_eq!(doc["apiVersion"], "monitoring.coreos.com/v1");
                assert_eq!(doc["spec"]["endpoints"][0]["port"], "metrics");
                assert_eq!(doc["spec"]["endpoints"][0]["path"], "/metrics");
            }
            other => panic!("unexpected kind {other}"),
        }
        if k == "DaemonSet" || k == "Deployment" {
            kind = k.clone();
        }
        kinds.push(k);
    }
    let service = services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("rel-ferry"))
        .expect("the registry Service")
        .clone();
    Rendered {
        pod: pod.expect("a workload"),
        pod_labels,
        selector,
        kind,
        config: config.expect("a ConfigMap with ferry.toml"),
        service,
        services,
        secrets,
        kinds,
    }
}

#[test]
fn helm_chart_renders_valid_kubernetes_objects() {
    let Some(helm) = ferry_testkit::peers::require("helm") else {
        return;
    };
    let lint = Command::new(&helm)
        .args(["lint", "--strict"])
        .arg(chart())
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stdout)
    );

    // Defaults: a DaemonSet on hostPort with a hostPath cache.
    let r = check(&helm, &[]);
    assert_eq!(r.kind, "DaemonSet");
    let c = &r.pod.containers[0];
    let args = c.args.clone().unwrap();
    let arg = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
    assert_eq!(arg("--listen"), "0.0.0.0:5000");
    assert_eq!(arg("--data-dir"), "/var/lib/ferry");
    assert_eq!(arg("--metrics"), "0.0.0.0:2112");
    let ports = c.ports.clone().unwrap();
    assert_eq!(ports[0].host_port, Some(5000));
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.clone().unwrap().http_get.unwrap().path.unwrap()
    };
    assert_eq!(probe(&c.readiness_probe), "/readyz");
    assert_eq!(probe(&c.liveness_probe), "/healthz");
    let volumes = r.pod.volumes.clone().unwrap();
    let data = volumes.iter().find(|v| v.name == "data").unwrap();
    assert_eq!(data.host_path.as_ref().unwrap().path, "/var/lib/ferry");
    assert!(r.pod.init_containers.is_some(), "hostPath ownership fixed");
    assert!(
        !c.env
            .clone()
            .unwrap()
            .iter()
            .any(|e| e.name == "FERRY_ADMIN_TOKEN"),
        "no admin API without a token"
    );
    // The config the chart ships is one ferry accepts.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("ferry.toml");
    std::fs::write(&file, &r.config).unwrap();
    let out = Command::new(ferry_bin())
        .args(["config", "print", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("registry-1.docker.io"));
    // The Service targets the container's named ports.
    let svc_ports = r.service.spec.unwrap().ports.unwrap();
    for p in &svc_ports {
        let target = p.target_port.clone().unwrap();
        let IntOrString::String(name) = target else {
            panic!("service ports target named ports")
        };
        assert!(
            ports.iter().any(|cp| cp.name.as_deref() == Some(&name)),
            "{name}"
        );
    }

    // A shared Deployment on a PVC, with the admin API, a ServiceMonitor and no metrics port on
    // the node.
    let r = check(
        &helm,
        &[
            "kind=Deployment",
            "storage.type=pvc",
            "storage.size=20Gi",
            "adminToken.value=s3cret",
            "serviceMonitor.enabled=true",
        ],
    );
    assert_eq!(r.kind, "Deployment");
    for k in ["PersistentVolumeClaim", "Secret", "ServiceMonitor"] {
        assert!(r.kinds.iter().any(|x| x == k), "{k} in {:?}", r.kinds);
    }
    let c = &r.pod.containers[0];
    assert_eq!(c.ports.clone().unwrap()[0].host_port, None);
    let token = c
        .env
        .clone()
        .unwrap()
        .into_iter()
        .find(|e| e.name == "FERRY_ADMIN_TOKEN")
        .expect("admin token from the Secret");
    assert_eq!(
        token.value_from.unwrap().secret_key_ref.unwrap().name,
        "rel-ferry-admin"
    );
    let volumes = r.pod.volumes.unwrap();
    let data = volumes.iter().find(|v| v.name == "data").unwrap();
    assert_eq!(
        data.persistent_volume_claim.as_ref().unwrap().claim_name,
        "rel-ferry"
    );

    // emptyDir, an existing Secret, metrics off.
    let r = check(
        &helm,
        &[
            "storage.type=emptyDir",
            "adminToken.existingSecret=ops-token",
            "metrics.enabled=false",
        ],
    );
    assert!(
        !r.kinds.iter().any(|k| k == "Secret"),
        "existing Secret reused"
    );
    let c = &r.pod.containers[0];
    assert!(!c.args.clone().unwrap().iter().any(|a| a == "--metrics"));
    let volumes = r.pod.volumes.unwrap();
    assert!(
        volumes
            .iter()
            .find(|v| v.name == "data")
            .unwrap()
            .empty_dir
            .is_some()
    );
    assert!(r.pod.init_containers.is_none());

    // Settings that cannot work are refused at render time, saying why.
    for (sets, why) in [
        (
            &["kind=StatefulSet"][..],
            "kind must be DaemonSet or Deployment",
        ),
        (&["storage.type=nfs"][..], "storage.type must be"),
        (
            &["serviceMonitor.enabled=true", "metrics.enabled=false"][..],
            "needs metrics.enabled",
        ),
        (
            &["kind=Deployment", "replicas=2", "storage.type=pvc"][..],
            "cannot share one ReadWriteOnce claim",
        ),
    ] {
        let err = render(&helm, sets).expect_err(why);
        assert!(err.contains(why), "{sets:?}: {err}");
    }
}

/// `deploy/k8s/trace-run-job.yaml`: a valid batch/v1 Job, Indexed, one shard per completion, whose
/// arguments `ferry trace run` accepts (it gets as far as the missing map).
#[test]
fn trace_run_job_is_an_indexed_job_of_replay_shards() {
    use k8s_openapi::api::batch::v1::Job;
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/k8s/trace-run-job.yaml");
    let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let job: Job = typed(&doc);
    let spec = job.spec.unwrap();
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    let n = spec.completions.unwrap();
    assert_eq!(spec.parallelism, Some(n));
    let pod = spec.template.spec.unwrap();
    let c = &pod.containers[0];
    let env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert!(env.contains(&"JOB_COMPLETION_INDEX") && env.contains(&"START_AT"));
    let args = c.args.clone().unwrap();
    assert_eq!(&args[..2], ["trace", "run"]);
    assert!(
        args.contains(&format!("--shard=$(JOB_COMPLETION_INDEX)/{n}")),
        "{args:?}"
    );
    // What the pod of index 1 runs, with the volume's paths under a temp dir.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_str().unwrap();
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("$(JOB_COMPLETION_INDEX)", "1")
                .replace("$(START_AT)", "2026-12-03T16:00:00Z")
                .replace("/data", data)
        })
        .collect();
    let out = std::process::Command::new(ferry_bin())
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("trace.map.jsonl"),
        "arguments parsed, then the map is missing: {stderr}"
    );
}

/// A cluster key as `p2p.clusterKey.value` takes it: 64 hex digits.
const CLUSTER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// `ferry config print` with the ferry container's arguments (the chart's paths moved under `dir`,
/// the cluster key file holding `key`): ferry accepts them, and this is the configuration they
/// make, parsed.
fn ferry_accepts(r: &Rendered, dir: &Path, key: Option<&[u8]>) -> toml::Value {
    let config = dir.join("ferry.toml");
    std::fs::write(&config, &r.config).unwrap();
    let key_file = dir.join("cluster.key");
    if let Some(k) = key {
        std::fs::write(&key_file, k).unwrap();
    }
    let args = r.args();
    assert_eq!(args[0], "serve");
    let args: Vec<String> = args[1..]
        .iter()
        .map(|a| match a.as_str() {
            "/etc/ferry/ferry.toml" => config.display().to_string(),
            "/var/lib/ferry" => dir.join("data").display().to_string(),
            "/etc/ferry-cluster-key/cluster.key" => key_file.display().to_string(),
            _ => a.clone(),
        })
        .collect();
    let out = Command::new(ferry_bin())
        .args(["config", "print"])
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ferry config print {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml::from_str(&String::from_utf8(out.stdout).unwrap()).expect("config print prints TOML")
}

/// `p2p.enabled`: the DaemonSet's nodes find each other through a headless Service that selects
/// exactly its pods and exposes the peer port; ferry gets the DHT flags with that Service's DNS
/// name and, with a cluster key, the key mounted read-only from a Secret, and accepts them all.
#[test]
fn helm_chart_p2p_daemonset_bootstraps_from_a_headless_service() {
    let Some(helm) = ferry_testkit::peers::require("helm") else {
        return;
    };
    let key_set = format!("p2p.clusterKey.value={CLUSTER_KEY}");
    let lint = Command::new(&helm)
        .args(["lint", "--strict"])
        .arg(chart())
        .args(["--set", "p2p.enabled=true,containerdMirror.enabled=true"])
        .args(["--set", &key_set])
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stdout)
    );

    let r = check(&helm, &["p2p.enabled=true", &key_set]);
    assert_eq!(r.kind, "DaemonSet");
    // The headless Service: every pod of the DaemonSet, ready or not, on the peer port.
    let peers = r.service("rel-ferry-peers").expect("the peers Service");
    let spec = peers.spec.clone().unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));
    let selector = spec.selector.clone().unwrap();
    assert_eq!(selector, r.selector, "selects what the DaemonSet selects");
    for (k, v) in &selector {
        assert_eq!(r.pod_labels.get(k), Some(v), "the pods carry {k}={v}");
    }
    let ports = spec.ports.unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, 5001);
    assert_eq!(
        ports[0].target_port,
        Some(IntOrString::String("peer".into()))
    );
    // The peer port, on the node too as the registry port is.
    let c = r.container();
    let peer = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("peer"))
        .expect("a container port named peer");
    assert_eq!(peer.container_port, 5001);
    assert_eq!(peer.host_port, Some(5001));
    // The DHT flags: every node bootstraps from the Service's name.
    let args = r.args();
    assert!(args.iter().any(|a| a == "--p2p"), "{args:?}");
    assert_eq!(
        arg_of(&args, "--p2p-listen").as_deref(),
        Some("0.0.0.0:5001")
    );
    assert_eq!(
        arg_of(&args, "--p2p-bootstrap").as_deref(),
        Some("rel-ferry-peers.infra.svc.cluster.local:5001")
    );
    // The cluster key: a Secret the chart made, mounted read-only, named by --cluster-key-file.
    let key_file = arg_of(&args, "--cluster-key-file").expect("--cluster-key-file");
    let secret = r.secret("rel-ferry-cluster-key").expect("the key's Secret");
    let data = secret.data.clone().unwrap();
    assert_eq!(data["cluster.key"].0, CLUSTER_KEY.as_bytes());
    let volume = r
        .pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "cluster-key")
        .expect("a cluster-key volume");
    let source = volume.secret.clone().unwrap();
    assert_eq!(source.secret_name.as_deref(), Some("rel-ferry-cluster-key"));
    let items = source.items.unwrap();
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        ("cluster.key", "cluster.key")
    );
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "cluster-key")
        .expect("the key mounted");
    assert_eq!(mount.read_only, Some(true));
    assert_eq!(key_file, format!("{}/{}", mount.mount_path, items[0].path));
    assert!(
        r.pod
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == "data" && v.host_path.is_some()),
        "the node identity (<data>/peer/identity.key) is kept on the node"
    );
    // ferry takes the flags and the key as the Secret holds it.
    let tmp = tempfile::tempdir().unwrap();
    let printed = ferry_accepts(&r, tmp.path(), Some(&data["cluster.key"].0));
    let p = &printed["peers"];
    assert_eq!(p["p2p"].as_bool(), Some(true));
    assert_eq!(p["listen"].as_str(), Some("0.0.0.0:5001"));
    assert_eq!(
        p["bootstrap"].as_array().unwrap(),
        &vec![toml::Value::from(
            "rel-ferry-peers.infra.svc.cluster.local:5001"
        )]
    );
    assert!(
        p["cluster_key_file"]
            .as_str()
            .unwrap()
            .ends_with("cluster.key")
    );

    // An existing Secret under another key, another cluster domain and peer port, no hostPort:
    // no Secret made, the key file still at the same path.
    let r = check(
        &helm,
        &[
            "p2p.enabled=true",
            "p2p.clusterKey.existingSecret=ops-swarm",
            "p2p.clusterKey.key=swarm.key",
            "p2p.clusterDomain=k8s.example",
            "p2p.port=7001",
            "hostPort=0",
        ],
    );
    assert!(r.secrets.is_empty(), "the existing Secret is used");
    let args = r.args();
    assert_eq!(
        arg_of(&args, "--p2p-bootstrap").as_deref(),
        Some("rel-ferry-peers.infra.svc.k8s.example:7001")
    );
    assert_eq!(
        arg_of(&args, "--p2p-listen").as_deref(),
        Some("0.0.0.0:7001")
    );
    assert_eq!(
        arg_of(&args, "--cluster-key-file").as_deref(),
        Some(key_file.as_str())
    );
    let source = r
        .pod
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.secret.clone())
        .unwrap();
    assert_eq!(source.secret_name.as_deref(), Some("ops-swarm"));
    assert_eq!(source.items.unwrap()[0].key, "swarm.key");
    let peer = r
        .container()
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("peer"))
        .unwrap();
    assert_eq!((peer.container_port, peer.host_port), (7001, None));
    let svc = r.service("rel-ferry-peers").unwrap().spec.clone().unwrap();
    assert_eq!(svc.ports.unwrap()[0].port, 7001);

    // The key in go-libp2p's swarm.key format, from a values file (as --set-file gives it).
    let values = tmp.path().join("swarm-values.yaml");
    let swarm_key = format!("/key/swarm/psk/1.0.0/\n/base16/\n{CLUSTER_KEY}\n");
    std::fs::write(
        &values,
        serde_yaml::to_string(&serde_json::json!({
            "p2p": {"enabled": true, "clusterKey": {"value": swarm_key}}
        }))
        .unwrap(),
    )
    .unwrap();
    let r = check_with(&helm, &[&values], &[]);
    let data = r
        .secret("rel-ferry-cluster-key")
        .unwrap()
        .data
        .clone()
        .unwrap();
    assert_eq!(data["cluster.key"].0, swarm_key.as_bytes());
    let dir = tmp.path().join("swarm");
    std::fs::create_dir_all(&dir).unwrap();
    ferry_accepts(&r, &dir, Some(&data["cluster.key"].0));

    // No key: nothing mounted, no flag; ferry still accepts the rest.
    let r = check(&helm, &["p2p.enabled=true", "storage.type=emptyDir"]);
    assert!(arg_of(&r.args(), "--cluster-key-file").is_none());
    assert!(
        !r.pod
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == "cluster-key")
    );
    assert!(r.secrets.is_empty());
    let dir = tmp.path().join("nokey");
    std::fs::create_dir_all(&dir).unwrap();
    let printed = ferry_accepts(&r, &dir, None);
    assert!(printed["peers"].get("cluster_key_file").is_none());
    // p2p off (the default): none of it.
    let r = check(&helm, &[]);
    assert!(r.service("rel-ferry-peers").is_none());
    assert!(!r.args().iter().any(|a| a.starts_with("--p2p")));

    // Settings that cannot work are refused at render time, saying why.
    for (sets, why) in [
        (
            &["p2p.enabled=true", "kind=Deployment"][..],
            "p2p.enabled needs kind=DaemonSet",
        ),
        (
            &["p2p.enabled=true", "storage.type=pvc"][..],
            "p2p.enabled needs a data directory per node",
        ),
        (
            &["p2p.enabled=true", "p2p.port=5000"][..],
            "p2p.port 5000 must differ from port",
        ),
        (
            &["p2p.enabled=true", "p2p.clusterKey.value=not-a-key"][..],
            "p2p.clusterKey.value must be 64 hex digits",
        ),
    ] {
        let err = render(&helm, sets).expect_err(why);
        assert!(err.contains(why), "{sets:?}: {err}");
    }
}

/// The containerd-hosts init container's script, and the directory on the node it writes under.
fn hosts_script(r: &Rendered) -> (String, String) {
    let c = r
        .init_container("containerd-hosts")
        .expect("a containerd-hosts init container");
    let command = c.command.clone().unwrap();
    assert_eq!(&command[..2], ["sh", "-c"]);
    let env = c.env.clone().unwrap();
    let hosts_dir = env
        .iter()
        .find(|e| e.name == "HOSTS_DIR")
        .and_then(|e| e.value.clone())
        .expect("HOSTS_DIR");
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == hosts_dir)
        .expect("HOSTS_DIR is a mount");
    let volume = r
        .pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    let host_path = volume.host_path.clone().expect("a hostPath");
    assert_eq!(host_path.type_.as_deref(), Some("DirectoryOrCreate"));
    (command[2].clone(), host_path.path)
}

/// Runs the init container's script with /bin/sh, `HOSTS_DIR` set to `dir`; its output.
fn run_hosts_script(script: &str, dir: &Path) -> String {
    let out = Command::new("sh")
        .args(["-c", script])
        .env("HOSTS_DIR", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `containerdMirror.enabled`: an init container writes, on the node, a hosts.toml per registry
/// that sends containerd's pulls to http://127.0.0.1:<hostPort> (so ferry gets `?ns=<registry>`)
/// with the upstream as the fallback: the same TOML `ferry containerd-config` writes. The script
/// (run here with /bin/sh, dash) writes through a temporary file and renames it, and a second run
/// changes nothing.
#[test]
fn helm_chart_writes_containerd_hosts_toml_on_each_node() {
    let Some(helm) = ferry_testkit::peers::require("helm") else {
        return;
    };
    let r = check(&helm, &["containerdMirror.enabled=true"]);
    let (script, node_dir) = hosts_script(&r);
    assert_eq!(node_dir, "/etc/containerd/certs.d");
    let c = r.init_container("containerd-hosts").unwrap();
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.run_as_user, Some(0), "the hosts directory is root's");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    assert!(c.resources.clone().unwrap().limits.is_some());
    assert!(
        r.init_container("data-permissions").is_some(),
        "the hostPath's ownership is still fixed"
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs.d");
    let first = run_hosts_script(&script, &dir);
    assert_eq!(first.matches(": written").count(), 3, "{first}");
    let registries = ["docker.io", "quay.io", "ghcr.io"];
    let read = |r: &str| std::fs::read_to_string(dir.join(r).join("hosts.toml")).unwrap();
    let before: Vec<String> = registries.iter().map(|r| read(r)).collect();
    for (registry, text) in registries.iter().zip(&before) {
        let v: toml::Value = toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let server = match *registry {
            "docker.io" => "https://registry-1.docker.io".to_owned(),
            r => format!("https://{r}"),
        };
        assert_eq!(v["server"].as_str(), Some(server.as_str()), "{text}");
        let host = &v["host"]["http://127.0.0.1:5000"];
        assert_eq!(
            host["capabilities"],
            toml::Value::Array(vec!["pull".into(), "resolve".into()]),
            "{text}"
        );
        assert_eq!(v["host"].as_table().unwrap().len(), 1);
    }
    // Idempotent: nothing rewritten, nothing left behind.
    let second = run_hosts_script(&script, &dir);
    assert_eq!(second.matches(": unchanged").count(), 3, "{second}");
    assert_eq!(registries.map(read).to_vec(), before);
    for r in registries {
        let names: Vec<_> = std::fs::read_dir(dir.join(r))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["hosts.toml"], "no temporary file left in {r}");
    }
    // A file someone changed is put back.
    std::fs::write(
        dir.join("quay.io/hosts.toml"),
        "server = \"https://elsewhere\"\n",
    )
    .unwrap();
    let third = run_hosts_script(&script, &dir);
    assert!(third.contains("quay.io/hosts.toml: written"), "{third}");
    assert_eq!(read("quay.io"), before[1]);

    // The same TOML as `ferry containerd-config` with the chart's config (comments aside).
    let config = tmp.path().join("ferry.toml");
    std::fs::write(&config, &r.config).unwrap();
    let out = Command::new(ferry_bin())
        .args(["containerd-config", "--mirror", "http://127.0.0.1:5000"])
        .args([
            "--registries",
            "docker.io,quay.io,ghcr.io",
            "--dry-run",
            "--config",
        ])
        .arg(&config)
        .args(["--dir", "/certs.d"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let uncommented = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    };
    for (registry, text) in registries.iter().zip(&before) {
        let theirs = printed
            .split(&format!("# /certs.d/{registry}/hosts.toml\n"))
            .nth(1)
            .and_then(|rest| rest.split("# /certs.d/").next())
            .unwrap_or_else(|| panic!("{registry} in {printed}"));
        assert_eq!(uncommented(text), uncommented(theirs), "{registry}");
    }

    // Another hosts directory, a registry named by its upstream's `name`, the hostPort's port.
    let values = tmp.path().join("values.yaml");
    std::fs::write(
        &values,
        "config: |\n  [[upstream]]\n  url = \"http://registry.lan:5000/\"\n  [[upstream]]\n  url = \"https://mirror.gcr.io\"\n  name = \"gcr.io\"\n\
         hostPort: 30020\ncontainerdMirror:\n  enabled: true\n  hostsDir: /var/lib/rancher/k3s/agent/etc/containerd/certs.d\n  registries: [\"registry.lan:5000\", gcr.io]\n",
    )
    .unwrap();
    let r = check_with(&helm, &[&values], &[]);
    let (script, node_dir) = hosts_script(&r);
    assert_eq!(
        node_dir,
        "/var/lib/rancher/k3s/agent/etc/containerd/certs.d"
    );
    let dir = tmp.path().join("k3s");
    run_hosts_script(&script, &dir);
    for (registry, server) in [
        ("registry.lan:5000", "http://registry.lan:5000"),
        ("gcr.io", "https://mirror.gcr.io"),
    ] {
        let text = read_hosts(&dir, registry);
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["server"].as_str(), Some(server), "{text}");
        assert!(v["host"].get("http://127.0.0.1:30020").is_some(), "{text}");
    }

    for (sets, why) in [
        (
            &["containerdMirror.enabled=true", "hostPort=0"][..],
            "containerdMirror.enabled needs hostPort",
        ),
        (
            &["containerdMirror.enabled=true", "kind=Deployment"][..],
            "containerdMirror.enabled needs kind=DaemonSet",
        ),
        (
            &[
                "containerdMirror.enabled=true",
                "containerdMirror.registries={gcr.io}",
            ][..],
            "gcr.io is not an [[upstream]] of config",
        ),
        (
            &[
                "containerdMirror.enabled=true",
                "containerdMirror.registries={https://ghcr.io}",
            ][..],
            "must be a registry host[:port]",
        ),
        (
            &[
                "containerdMirror.enabled=true",
                "containerdMirror.hostsDir=certs.d",
            ][..],
            "containerdMirror.hostsDir must be an absolute path",
        ),
    ] {
        let err = render(&helm, sets).expect_err(why);
        assert!(err.contains(why), "{sets:?}: {err}");
    }
}

fn read_hosts(dir: &Path, registry: &str) -> String {
    std::fs::read_to_string(dir.join(registry).join("hosts.toml")).unwrap()
}

/// The hosts.toml the chart's init container writes, end to end: containerd (with its hosts
/// directory where the script wrote) pulls an image of an upstream Distribution, and the pull goes
/// through ferry (on the chart's hostPort, with the chart's config): ferry's catalog has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_chart_hosts_toml_sends_containerd_through_ferry() {
    let Some(helm) = ferry_testkit::peers::require("helm") else {
        return;
    };
    let (Some(skopeo), Some(containerd)) = (
        ferry_testkit::peers::Skopeo::new(),
        ferry_testkit::peers::Containerd::start(),
    ) else {
        return;
    };
    let Some(upstream) = ferry_testkit::peers::DockerRegistry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let img = ferry_testkit::image::image(47, 2, 100_000, "amd64");
    skopeo.push_image(
        &img,
        tmp.path(),
        &format!("{}/team/app:v1", upstream.host()),
    );

    let port = ferry_testkit::peers::free_port();
    let values = tmp.path().join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "config: |\n  [[upstream]]\n  url = \"http://{up}\"\nhostPort: {port}\ncontainerdMirror:\n  enabled: true\n  registries: [\"{up}\"]\n",
            up = upstream.host()
        ),
    )
    .unwrap();
    let r = check_with(&helm, &[&values], &[]);
    let (script, _) = hosts_script(&r);
    run_hosts_script(&script, &containerd.hosts_dir());
    let config = tmp.path().join("ferry.toml");
    std::fs::write(&config, &r.config).unwrap();
    let ferry = ferry_testkit::peers::Ferry::start_on(
        ferry_bin(),
        port,
        &tmp.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );

    let reference = format!("{}/team/app:v1", upstream.host());
    let out = containerd.pull("default", &reference);
    assert!(
        out.status.success(),
        "pull with the chart's hosts.toml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cached = format!("{}/team/app", upstream.host().replace(':', "__"));
    let catalog = crate::catalog(&ferry.url()).await;
    assert!(
        catalog.contains(&cached),
        "containerd went through ferry: {catalog:?}"
    );
}

fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/k8s/bench")
}

/// Kubernetes' `$(VAR)` expansion (a name not in `vars` stays as written).
fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("$(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find(')') else {
            rest = &rest[i..];
            break;
        };
        match vars.get(&after[..j]) {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[i..i + 3 + j]),
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    out
}

/// A container's environment as the kubelet makes it: values (expanded), the pod's annotations
/// through the downward API, and `given` for the other fields (node name, host IP …).
fn container_env(
    c: &Container,
    annotations: &BTreeMap<String, String>,
    given: &BTreeMap<&str, String>,
) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for e in c.env.iter().flatten() {
        let v = if let Some(v) = &e.value {
            expand(v, &vars)
        } else {
            let path = e
                .value_from
                .as_ref()
                .and_then(|f| f.field_ref.as_ref())
                .map(|f| f.field_path.clone())
                .unwrap_or_else(|| panic!("{}: env {} is a value or a fieldRef", c.name, e.name));
            match path
                .strip_prefix("metadata.annotations['")
                .and_then(|p| p.strip_suffix("']"))
            {
                Some(key) => annotations
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| panic!("{}: no annotation {key}", c.name)),
                None => given
                    .get(path.as_str())
                    .cloned()
                    .unwrap_or_else(|| panic!("{}: {path} not given", c.name)),
            }
        };
        vars.insert(e.name.clone(), v);
    }
    vars
}

/// The `-l` selector of the README's `kubectl logs` command, as key=value pairs.
fn readme_log_selector(readme: &str) -> BTreeMap<String, String> {
    let line = readme
        .lines()
        .find(|l| l.contains("kubectl") && l.contains(" logs ") && l.contains(" -l "))
        .expect("the README collects with kubectl logs -l");
    let selector = line
        .split(" -l ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    selector
        .split(',')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// `deploy/k8s/bench/`: every manifest is a valid Kubernetes object (typed round trip), the ferry
/// values files render the chart (baseline without p2p, p2p with), the pullers run on every node
/// with bounded resources and the README's `kubectl logs -l` selector, the names agree across
/// files (upstream Service, ferry's [[upstream]], the pullers' ?ns=, the hostPort); then one
/// puller's steps run here, as the kubelet would run them: wait.sh, `ferry load run` with the
/// manifest's arguments through a ferry mirror (the chart's config from the values file) of a
/// registry holding the image pushed as the README says, and report.sh, whose JSON line
/// summarize.jq turns into rollout stats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_rollout_bench_manifests_run_one_puller_per_node() {
    use k8s_openapi::api::core::v1::Namespace;
    let Some(helm) = ferry_testkit::peers::require("helm") else {
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(bench_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut namespaces = Vec::new();
    let mut daemonsets = Vec::new();
    let mut deployments = Vec::new();
    let mut services = Vec::new();
    let mut config_maps = Vec::new();
    let mut values = BTreeMap::new();
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap().to_owned();
        if let Some(scenario) = name.strip_suffix(".values.yaml") {
            values.insert(scenario.to_owned(), check_with(&helm, &[f], &[]));
            continue;
        }
        for doc in documents(&std::fs::read_to_string(f).unwrap()) {
            let kind = doc["kind"].as_str().unwrap().to_owned();
            if kind != "Namespace" {
                assert_eq!(
                    doc["metadata"]["namespace"], "ferry-bench",
                    "{name}: {kind}"
                );
            }
            match kind.as_str() {
                "Namespace" => namespaces.push(typed::<Namespace>(&doc)),
                "DaemonSet" => daemonsets.push(typed::<DaemonSet>(&doc)),
                "Deployment" => deployments.push(typed::<Deployment>(&doc)),
                "Service" => services.push(typed::<Service>(&doc)),
                "ConfigMap" => config_maps.push(typed::<ConfigMap>(&doc)),
                other => panic!("{name}: unexpected kind {other}"),
            }
        }
    }
    assert_eq!(namespaces.len(), 1);
    assert_eq!(namespaces[0].metadata.name.as_deref(), Some("ferry-bench"));

    // The pullers: one pod per node, whatever its taints, each step bounded.
    let ds = daemonsets
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("ferry-rollout-puller"))
        .expect("the puller DaemonSet");
    let spec = ds.spec.clone().unwrap();
    let rolling = spec.update_strategy.unwrap().rolling_update.unwrap();
    assert_eq!(
        rolling.max_unavailable,
        Some(IntOrString::Int(1)),
        "v2: node after node"
    );
    let template = spec.template;
    let meta = template.metadata.unwrap();
    let labels = meta.labels.unwrap();
    let annotations = meta.annotations.unwrap();
    let pod = template.spec.unwrap();
    let readme = std::fs::read_to_string(bench_dir().join("README.md")).unwrap();
    let selector = readme_log_selector(&readme);
    assert_eq!(
        Some(&selector),
        spec.selector.match_labels.as_ref(),
        "the README collects exactly the pullers"
    );
    for (k, v) in &selector {
        assert_eq!(labels.get(k), Some(v));
    }
    assert!(
        pod.tolerations
            .iter()
            .flatten()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "tolerates every taint"
    );
    let init = pod.init_containers.clone().unwrap();
    let all: Vec<&Container> = init.iter().chain(&pod.containers).collect();
    for c in &all {
        let r = c.resources.clone().unwrap();
        let limits = r.limits.unwrap_or_default();
        assert!(
            limits.contains_key("memory") && limits.contains_key("cpu"),
            "{}: bounded",
            c.name
        );
        assert!(
            r.requests.is_some_and(|q| q.contains_key("cpu")),
            "{}",
            c.name
        );
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
    }
    let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["wait", "pull", "report"]);
    let (wait, pull, report) = (all[0], all[1], all[2]);
    let pull_args = pull.args.clone().unwrap();
    assert_eq!(&pull_args[..2], ["load", "run"]);
    for a in ["--ns=$(UPSTREAM)", "--passes=1", "--max-pullers=1"] {
        assert!(pull_args.iter().any(|x| x == a), "{a} in {pull_args:?}");
    }
    // The image and the scenario come from the pod's annotations.
    let from_annotation = |c: &Container, var: &str| -> String {
        let e = c.env.iter().flatten().find(|e| e.name == var).unwrap();
        let path = &e
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path;
        path.strip_prefix("metadata.annotations['")
            .and_then(|p| p.strip_suffix("']"))
            .unwrap()
            .to_owned()
    };
    for (c, var, key) in [
        (wait, "IMAGE", "ferry-bench/image"),
        (report, "IMAGE", "ferry-bench/image"),
        (pull, "UPSTREAM", "ferry-bench/upstream"),
        (report, "SCENARIO", "ferry-bench/scenario"),
        (report, "ROLLOUT", "ferry-bench/rollout"),
        (report, "CASE", "ferry-bench/case"),
        (wait, "START_AT", "ferry-bench/start-at"),
    ] {
        assert_eq!(from_annotation(c, var), key, "{}: {var}", c.name);
        assert!(annotations.contains_key(key), "{key}");
    }
    assert_eq!(annotations["ferry-bench/scenario"], "baseline");
    assert_eq!(
        annotations["ferry-bench/image"],
        format!(
            "ferry-bench/{}:{}",
            annotations["ferry-bench/case"], annotations["ferry-bench/rollout"]
        )
    );
    // The scripts' ConfigMap is the one mounted.
    let scripts_cm = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "scripts")
        .and_then(|v| v.config_map.clone())
        .unwrap()
        .name;
    let scripts = config_maps
        .iter()
        .find(|c| c.metadata.name == Some(scripts_cm.clone()))
        .expect("the scripts' ConfigMap")
        .data
        .clone()
        .unwrap();
    assert_eq!(wait.command.clone().unwrap(), ["sh", "/scripts/wait.sh"]);
    assert!(report.command.clone().unwrap()[2].starts_with("sh /scripts/report.sh &&"));

    // The ferry installs: the same single upstream, p2p only in p2p; on every node; fresh caches.
    let (baseline, p2p) = (&values["ferry-baseline"], &values["ferry-p2p"]);
    assert!(!baseline.args().iter().any(|a| a == "--p2p"));
    assert!(p2p.args().iter().any(|a| a == "--p2p"));
    assert_eq!(baseline.config, p2p.config);
    for r in [baseline, p2p] {
        assert!(
            r.pod
                .tolerations
                .iter()
                .flatten()
                .any(|t| t.operator.as_deref() == Some("Exists"))
        );
        let data = r
            .pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "data")
            .unwrap();
        assert!(data.empty_dir.is_some(), "a fresh cache per install");
        let registry = r.container().ports.clone().unwrap()[0].clone();
        assert_eq!(
            registry.host_port.map(|p| p.to_string()).as_deref(),
            Some(annotations["ferry-bench/mirror-port"].as_str())
        );
    }
    let config: toml::Value = toml::from_str(&baseline.config).unwrap();
    let upstreams = config["upstream"].as_array().unwrap();
    assert_eq!(upstreams.len(), 1);
    let url = upstreams[0]["url"].as_str().unwrap();
    assert_eq!(
        url.strip_prefix("http://"),
        Some(annotations["ferry-bench/upstream"].as_str()),
        "the pullers' ?ns= names ferry's upstream"
    );
    // …which is the upstream Service.
    let svc = services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("ferry-bench-upstream"))
        .unwrap();
    let svc_port = svc.spec.clone().unwrap().ports.unwrap()[0].port;
    assert_eq!(
        annotations["ferry-bench/upstream"],
        format!("ferry-bench-upstream.ferry-bench.svc.cluster.local:{svc_port}")
    );
    assert!(
        deployments
            .iter()
            .any(|d| d.metadata.name.as_deref() == Some("ferry-bench-upstream"))
    );

    // One puller, here: a registry holding the image (pushed as the README says), ferry with the
    // bench config in front of it, and the three steps with the manifest's commands.
    let tmp = tempfile::tempdir().unwrap();
    let upstream =
        ferry_testkit::peers::Ferry::start(ferry_bin(), &tmp.path().join("upstream"), &[]);
    let image = annotations["ferry-bench/image"].clone();
    let names = tmp.path().join("names.txt");
    let generate = Command::new(ferry_bin())
        .args(["load", "gen", "--registry", &upstream.url()])
        .args([
            "--count",
            "1",
            "--batches",
            "1",
            "--blobs",
            "2",
            "--blob-size",
            "100KB",
        ])
        .args(["--seed", "14", "--out"])
        .arg(&names)
        .output()
        .unwrap();
    assert!(
        generate.status.success(),
        "{}",
        String::from_utf8_lossy(&generate.stderr)
    );
    let generated = std::fs::read_to_string(&names).unwrap().trim().to_owned();
    let copy = Command::new(ferry_bin())
        .args(["copy", "-q"])
        .arg(format!("registry://{}/{generated}", upstream.host()))
        .arg(format!("registry://{}/{image}", upstream.host()))
        .output()
        .unwrap();
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let config = tmp.path().join("ferry.toml");
    std::fs::write(&config, baseline.config.replace(url, &upstream.url())).unwrap();
    let mirror = ferry_testkit::peers::Ferry::start(
        ferry_bin(),
        &tmp.path().join("mirror"),
        &["--config", config.to_str().unwrap()],
    );

    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let scripts_dir = tmp.path().join("scripts");
    std::fs::create_dir_all(&scripts_dir).unwrap();
    for (k, v) in &scripts {
        std::fs::write(scripts_dir.join(k), v).unwrap();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut annotations = annotations.clone();
    annotations.insert("ferry-bench/upstream".into(), upstream.host());
    annotations.insert("ferry-bench/mirror-port".into(), mirror.port.to_string());
    annotations.insert("ferry-bench/start-at".into(), (now + 1).to_string());
    let given = BTreeMap::from([
        ("status.hostIP", "127.0.0.1".to_owned()),
        ("spec.nodeName", "node-a".to_owned()),
        ("metadata.name", "ferry-rollout-puller-x7k2p".to_owned()),
    ]);
    let env_of = |c: &Container| -> BTreeMap<String, String> {
        container_env(c, &annotations, &given)
            .into_iter()
            .map(|(k, v)| (k, v.replace("/work", work.to_str().unwrap())))
            .collect()
    };
    let run_script = |name: &str, env: BTreeMap<String, String>| {
        let out = Command::new("sh")
            .arg(scripts_dir.join(name))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .envs(env)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let started = std::time::Instant::now();
    run_script("wait.sh", env_of(wait));
    assert!(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            > now,
        "waited for START_AT ({:?})",
        started.elapsed()
    );
    assert_eq!(
        std::fs::read_to_string(work.join("images.txt")).unwrap(),
        format!("{image}\n")
    );
    let vars = env_of(pull);
    let args: Vec<String> = pull_args.iter().map(|a| expand(a, &vars)).collect();
    let out = Command::new(ferry_bin()).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "ferry {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = run_script("report.sh", env_of(report));
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line: {printed}");
    let line: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(line["node"], "node-a");
    assert_eq!(line["pod"], "ferry-rollout-puller-x7k2p");
    assert_eq!(line["image"], image.as_str());
    assert_eq!(line["upstream"], upstream.host().as_str());
    assert_eq!(line["case"], annotations["ferry-bench/case"].as_str());
    assert_eq!(line["scenario"], "baseline");
    assert_eq!(line["rollout"], "v1");
    assert_eq!(line["errors"], 0);
    assert!(line["duration_ms"].as_f64().unwrap() > 0.0, "{line}");
    assert!(
        line["bytes"].as_u64().unwrap() > 200_000,
        "2 layers of 100 KB: {line}"
    );
    assert!(line["started_unix"].as_u64().unwrap() >= now, "{line}");
    // The pull went through ferry, from the upstream named by ?ns=.
    let cached = format!(
        "{}/{}",
        upstream.host().replace(':', "__"),
        image.split(':').next().unwrap()
    );
    let catalog = crate::catalog(&mirror.url()).await;
    assert!(catalog.contains(&cached), "{catalog:?}");

    // summarize.jq: the lines as `ferry-bench rollout`'s runs (avg, nearest-rank p50/p95).
    let Some(jq) = ferry_testkit::peers::require("jq") else {
        return;
    };
    let mut more = Vec::new();
    for (i, (scenario, rollout, ms)) in [
        ("baseline", "v1", 900.0),
        ("baseline", "v1", 700.0),
        ("p2p", "v1", 300.0),
        ("p2p", "v2", 100.0),
        ("p2p", "v2", 200.0),
        ("p2p", "v2", 50.0),
    ]
    .into_iter()
    .enumerate()
    {
        let mut l = line.clone();
        l["pod"] = format!("pod-{i}").into();
        l["node"] = format!("node-{i}").into();
        l["scenario"] = scenario.into();
        l["rollout"] = rollout.into();
        l["duration_ms"] = ms.into();
        l["started_unix"] = (i as u64).into();
        more.push(l);
    }
    let mut jsonl = String::new();
    for l in std::iter::once(&line)
        .chain(&more)
        .chain(std::iter::once(&line))
    {
        jsonl.push_str(&format!("{l}\n"));
    }
    let input = tmp.path().join("results.jsonl");
    std::fs::write(&input, jsonl).unwrap();
    let out = Command::new(jq)
        .args(["-s", "-f"])
        .arg(bench_dir().join("summarize.jq"))
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = summary["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run["case"], line["case"]);
    let nearest = |ms: &[f64], q: f64| -> f64 {
        let mut ms = ms.to_vec();
        ms.sort_by(f64::total_cmp);
        ms[((ms.len() - 1) as f64 * q).round() as usize]
    };
    let first = line["duration_ms"].as_f64().unwrap();
    for (scenario, rollout, ms) in [
        ("baseline", "v1", vec![first, 900.0, 700.0]),
        ("p2p", "v1", vec![300.0]),
        ("p2p", "v2", vec![100.0, 200.0, 50.0]),
    ] {
        let s = &run[scenario][rollout];
        let avg = ms.iter().sum::<f64>() / ms.len() as f64;
        assert!(
            (s["avg_ms"].as_f64().unwrap() - avg).abs() < 1e-9,
            "{scenario} {rollout}: {s}"
        );
        assert_eq!(s["p50_ms"].as_f64(), Some(nearest(&ms, 0.5)), "{s}");
        assert_eq!(s["p95_ms"].as_f64(), Some(nearest(&ms, 0.95)), "{s}");
        assert_eq!(
            s["per_node_ms"].as_array().unwrap().len(),
            ms.len(),
            "the line collected twice counts once"
        );
    }
    let order: Vec<f64> = run["p2p"]["v2"]["per_node_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(
        order,
        [100.0, 200.0, 50.0],
        "in the order the pulls started"
    );
}

/// `tls.existingSecret` and `auth.*`: the TLS Secret, the htpasswd Secret and the token signing
/// key are mounted read-only (0440, root-owned: what ferry accepts for secret files), ferry gets
/// the flags naming them, the probes speak HTTPS, and ferry accepts the rendered arguments.
#[test]
fn helm_chart_serves_tls_with_htpasswd_and_tokens_from_secrets() {
    let Some(helm) = ferry_testkit::peers::require("helm") else {
        return;
    };
    let r = check(
        &helm,
        &[
            "tls.existingSecret=ferry-tls",
            "auth.htpasswdSecret=ferry-users",
            "auth.tokens=true",
            "auth.signingKeySecret=ferry-token-key",
        ],
    );
    let args = r.args();
    assert_eq!(
        arg_of(&args, "--tls-cert").as_deref(),
        Some("/etc/ferry-tls/tls.crt")
    );
    assert_eq!(
        arg_of(&args, "--tls-key").as_deref(),
        Some("/etc/ferry-tls/tls.key")
    );
    assert_eq!(
        arg_of(&args, "--htpasswd").as_deref(),
        Some("/etc/ferry-auth/htpasswd")
    );
    assert!(args.iter().any(|a| a == "--token-auth"));
    assert_eq!(
        arg_of(&args, "--token-signing-key").as_deref(),
        Some("/etc/ferry-token-key/token-signing.key")
    );
    let volumes = r.pod.volumes.clone().unwrap_or_default();
    for (name, secret, dir) in [
        ("tls", "ferry-tls", "/etc/ferry-tls"),
        ("htpasswd", "ferry-users", "/etc/ferry-auth"),
        ("token-key", "ferry-token-key", "/etc/ferry-token-key"),
    ] {
        let v = volumes
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("a {name} volume"));
        let source = v.secret.as_ref().expect("a Secret volume");
        assert_eq!(source.secret_name.as_deref(), Some(secret));
        assert_eq!(source.default_mode, Some(0o440));
        let mount = r
            .container()
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} mounted"));
        assert_eq!(mount.mount_path, dir);
        assert_eq!(mount.read_only, Some(true));
    }
    let c = r.container();
    for probe in [&c.startup_probe, &c.liveness_probe, &c.readiness_probe] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("an HTTP probe");
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let printed = ferry_accepts(&r, tmp.path(), None);
    assert_eq!(
        printed["tls"]["cert_file"].as_str(),
        Some("/etc/ferry-tls/tls.crt")
    );
    assert_eq!(printed["auth"]["token"]["issue"].as_bool(), Some(true));

    // Without TLS the probes stay HTTP; a signing key without tokens is refused.
    let plain = check(&helm, &[]);
    assert!(
        plain
            .container()
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .scheme
            .is_none()
    );
    let err = render(&helm, &["auth.signingKeySecret=k"]).unwrap_err();
    assert!(err.contains("auth.tokens"), "{err}");
}
