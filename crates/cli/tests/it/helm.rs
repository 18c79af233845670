//! The Helm chart in `deploy/helm/ferry`, rendered by the real `helm` for each supported shape and
//! checked against the Kubernetes API types (no cluster here): every document must deserialize into
//! its k8s-openapi type and serialize back to the same JSON, so a misspelt or misplaced field —
//! which the API server would reject or silently drop — fails the test.

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, PodSpec, Secret, Service};
use serde_json::Value;

use crate::ferry_bin;

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/ferry")
}

/// `helm template` with `--set` values; the documents, or helm's error.
fn render(helm: &std::path::Path, sets: &[&str]) -> Result<Vec<Value>, String> {
    let mut cmd = Command::new(helm);
    cmd.args(["template", "rel"])
        .arg(chart())
        .args(["--namespace", "infra"]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    Ok(text
        .split("\n---")
        .filter_map(|doc| {
            let v: Value = serde_yaml::from_str(doc).expect("rendered YAML parses");
            (!v.is_null()).then_some(v)
        })
        .collect())
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
    kind: String,
    config: String,
    service: Service,
    kinds: Vec<String>,
}

fn check(helm: &std::path::Path, sets: &[&str]) -> Rendered {
    let docs = render(helm, sets).unwrap_or_else(|e| panic!("helm template {sets:?}: {e}"));
    let mut pod = None;
    let mut kind = String::new();
    let mut config = None;
    let mut service = None;
    let mut kinds = Vec::new();
    for doc in &docs {
        let k = doc["kind"].as_str().unwrap().to_owned();
        match k.as_str() {
            "DaemonSet" => {
                let d: DaemonSet = typed(doc);
                pod = d.spec.unwrap().template.spec;
            }
            "Deployment" => {
                let d: Deployment = typed(doc);
                let spec = d.spec.unwrap();
                assert_eq!(
                    spec.strategy.unwrap().type_.as_deref(),
                    Some("Recreate"),
                    "two pods must never share a data directory"
                );
                pod = spec.template.spec;
            }
            "ConfigMap" => {
                let c: ConfigMap = typed(doc);
                config = c.data.unwrap().remove("ferry.toml");
            }
            "Service" => service = Some(typed::<Service>(doc)),
            "Secret" => {
                typed::<Secret>(doc);
            }
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
    Rendered {
        pod: pod.expect("a workload"),
        kind,
        config: config.expect("a ConfigMap with ferry.toml"),
        service: service.expect("a Service"),
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
        let k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) = target else {
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
