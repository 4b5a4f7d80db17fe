//! One pipeline: what `review` proposes for a manifest is what the webhook patches into the
//! pods created from it. For every example manifest and every workload kind (Deployment,
//! StatefulSet, DaemonSet, Job, CronJob, ReplicaSet, bare Pod, Argo Rollout) the pod the
//! webhook would receive is built here INDEPENDENTLY of `review` (ownerReferences and
//! labels written by hand per kind, as the controllers set them), wrapped in a real
//! AdmissionReview, answered by `webhook::wire::review`, and its patch applied with
//! json-patch. The four `sidecar.istio.io/proxy*` annotations must equal what
//! `review --format json` proposed and what `review --write` wrote. Skip rules likewise.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};
use sidecar_sizer::engine::constraints::ClusterSnapshot;
use sidecar_sizer::engine::pipeline::Snapshots;
use sidecar_sizer::engine::spec::SpecStore;
use sidecar_sizer::sources::history::load_history_file;
use sidecar_sizer::webhook::wire::{self, Mode, Outcome, Settings};
use std::path::Path;

const FOUR: [(&str, &str); 4] = [
    ("sidecar.istio.io/proxyCPU", "cpu"),
    ("sidecar.istio.io/proxyCPULimit", "cpu_limit"),
    ("sidecar.istio.io/proxyMemory", "memory"),
    ("sidecar.istio.io/proxyMemoryLimit", "memory_limit"),
];

fn review_cli(dir: &Path, extra: &[&str]) -> std::process::Output {
    review_cmd(std::iter::once(dir.as_os_str()).chain(extra.iter().map(std::ffi::OsStr::new)))
}

/// Every object of a manifest file (Lists flattened), as plain JSON.
fn objects(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let docs: Vec<Value> = if path.extension().is_some_and(|e| e == "json") {
        vec![serde_json::from_str(&text).unwrap()]
    } else {
        text.split("\n---")
            .filter_map(|d| serde_yaml_ng::from_str::<Option<Value>>(d).unwrap())
            .collect()
    };
    for d in docs {
        match d["kind"].as_str() {
            Some("List") => out.extend(d["items"].as_array().unwrap().iter().cloned()),
            _ => out.push(d),
        }
    }
    out
}

fn template_of(obj: &Value) -> Value {
    match obj["kind"].as_str().unwrap() {
        "Pod" => obj.clone(),
        "CronJob" => obj["spec"]["jobTemplate"]["spec"]["template"].clone(),
        _ => obj["spec"]["template"].clone(),
    }
}

/// The pod a controller creates from `obj`'s template, as the apiserver hands it to the
/// webhook: the controller's ownerReference and labels, written out per kind.
fn pod_created_from(obj: &Value) -> (Value, String) {
    let kind = obj["kind"].as_str().unwrap();
    let name = obj["metadata"]["name"].as_str().unwrap();
    let namespace = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let template = template_of(obj);
    let mut meta = template["metadata"].clone();
    if !meta.is_object() {
        meta = json!({});
    }
    let mut spec = template["spec"].clone();
    // kubectl reads YAML 1.1: `hostNetwork: yes` arrives as JSON true.
    if let Some(h) = spec["hostNetwork"].as_str() {
        spec["hostNetwork"] = json!(matches!(h, "yes" | "on" | "true" | "True" | "y"));
    }
    let owner = |api: &str, kind: &str, owner: &str| {
        json!([{"apiVersion": api, "kind": kind, "name": owner,
                "uid": "7b3c1f6e-0000-4000-8000-000000000001",
                "controller": true, "blockOwnerDeletion": true}])
    };
    let labels = |meta: &mut Value, extra: Value| {
        if !meta["labels"].is_object() {
            meta["labels"] = json!({});
        }
        for (k, v) in extra.as_object().unwrap() {
            meta["labels"][k] = v.clone();
        }
    };
    let pod_name = match kind {
        "Deployment" => {
            let rs = format!("{name}-7d9f8c6b5");
            labels(&mut meta, json!({"pod-template-hash": "7d9f8c6b5"}));
            meta["ownerReferences"] = owner("apps/v1", "ReplicaSet", &rs);
            meta["generateName"] = json!(format!("{rs}-"));
            String::new()
        }
        "Rollout" => {
            let rs = format!("{name}-6c9f7d8b4");
            labels(
                &mut meta,
                json!({"rollouts-pod-template-hash": "6c9f7d8b4"}),
            );
            meta["ownerReferences"] = owner("apps/v1", "ReplicaSet", &rs);
            meta["generateName"] = json!(format!("{rs}-"));
            String::new()
        }
        "ReplicaSet" => {
            meta["ownerReferences"] = owner("apps/v1", "ReplicaSet", name);
            meta["generateName"] = json!(format!("{name}-"));
            String::new()
        }
        "StatefulSet" => {
            let pod = format!("{name}-0");
            labels(
                &mut meta,
                json!({"controller-revision-hash": format!("{name}-5f6d8c7b9d"),
                       "statefulset.kubernetes.io/pod-name": pod}),
            );
            meta["ownerReferences"] = owner("apps/v1", "StatefulSet", name);
            meta["name"] = json!(pod);
            pod
        }
        "DaemonSet" => {
            labels(
                &mut meta,
                json!({"controller-revision-hash": "6b9f5d7c48", "pod-template-generation": "1"}),
            );
            meta["ownerReferences"] = owner("apps/v1", "DaemonSet", name);
            meta["generateName"] = json!(format!("{name}-"));
            String::new()
        }
        "Job" => {
            labels(
                &mut meta,
                json!({"job-name": name, "batch.kubernetes.io/job-name": name}),
            );
            meta["ownerReferences"] = owner("batch/v1", "Job", name);
            meta["generateName"] = json!(format!("{name}-"));
            String::new()
        }
        "CronJob" => {
            let job = format!("{name}-28954321");
            labels(
                &mut meta,
                json!({"job-name": job, "batch.kubernetes.io/job-name": job}),
            );
            meta["ownerReferences"] = owner("batch/v1", "Job", &job);
            meta["generateName"] = json!(format!("{job}-"));
            String::new()
        }
        "Pod" => name.to_string(),
        other => panic!("unexpected kind {other}"),
    };
    meta["namespace"] = json!(namespace);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec});
    let mut review = fixture("review-deployment-pod.json");
    review["request"]["object"] = pod;
    review["request"]["namespace"] = json!(namespace);
    review["request"]["name"] = json!(pod_name);
    (review, namespace)
}

struct Webhook {
    settings: Settings,
    specs: SpecStore,
    usage: sidecar_sizer::sources::history::UsageSnapshot,
    cluster: ClusterSnapshot,
}

impl Webhook {
    fn new() -> Webhook {
        let specs = SpecStore::load_dir(&repo().join("examples/specs"), &SpecStore::default());
        let (usage, _) = load_history_file(&repo().join("examples/history.csv")).unwrap();
        Webhook {
            settings: Settings::default(),
            specs,
            usage,
            cluster: ClusterSnapshot::default(),
        }
    }

    /// The answer's outcome and the pod's annotations after its patch.
    fn admit(&self, review: &Value) -> (Outcome, Option<String>, Value) {
        let snaps = Snapshots {
            specs: &self.specs,
            usage: &self.usage,
            cluster: &self.cluster,
            mesh: None,
            hpas: None,
        };
        let body = serde_json::to_vec(review).unwrap();
        let answer = wire::review(&body, Mode::Enforce, &self.settings, &snaps).unwrap();
        let resp: Value = serde_json::from_slice(&answer.body).unwrap();
        let mut pod = review["request"]["object"].clone();
        if let Some(p) = resp["response"]["patch"].as_str() {
            let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            json_patch::patch(&mut pod, &patch).unwrap();
        }
        (
            answer.outcome,
            answer.workload.map(|w| w.name),
            pod["metadata"]["annotations"].clone(),
        )
    }
}

/// Review `dir` (json), write it, and check every object against the webhook.
/// Returns how many objects were sized and how many skipped.
fn check_dir(dir: &Path) -> (usize, usize) {
    let out = review_cli(dir, &["--format", "json"]);
    assert!(
        matches!(out.status.code(), Some(0)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let items: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let written = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(dir).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, written.path().join(f.file_name().unwrap())).unwrap();
    }
    let w = review_cli(written.path(), &["--write"]);
    assert_eq!(
        w.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&w.stderr)
    );
    let webhook = Webhook::new();
    let (mut sized, mut skipped) = (0, 0);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let written_objs = objects(&written.path().join(file.file_name().unwrap()));
        for (n, obj) in objects(&file).iter().enumerate() {
            let kind = obj["kind"].as_str().unwrap_or("");
            if !matches!(
                kind,
                "Pod"
                    | "Deployment"
                    | "StatefulSet"
                    | "DaemonSet"
                    | "Job"
                    | "CronJob"
                    | "ReplicaSet"
                    | "Rollout"
            ) {
                continue;
            }
            let name = obj["metadata"]["name"].as_str().unwrap();
            let what = format!("{} {kind} {name}", file.display());
            let item = items
                .iter()
                .find(|i| {
                    i["kind"] == kind
                        && i["name"] == name
                        && i["file"]
                            .as_str()
                            .unwrap()
                            .ends_with(file.file_name().unwrap().to_str().unwrap())
                })
                .unwrap_or_else(|| panic!("{what}: not in the review output"));
            let (review, _) = pod_created_from(obj);
            let (outcome, workload, annotations) = webhook.admit(&review);
            let written_ann = &template_of(&written_objs[n])["metadata"]["annotations"];
            if outcome == Outcome::Skipped {
                assert!(
                    item["skipped"].is_string(),
                    "{what}: webhook skips, review sized: {item}"
                );
                for (key, _) in FOUR {
                    assert!(
                        written_ann.get(key).is_none(),
                        "{what}: skipped but written"
                    );
                }
                skipped += 1;
                continue;
            }
            assert!(
                item.get("skipped").is_none(),
                "{what}: review skips, webhook did not"
            );
            assert_eq!(
                workload.as_deref(),
                item["workload"].as_str(),
                "{what}: workload"
            );
            for (key, field) in FOUR {
                let got = annotations[key].as_str();
                assert_eq!(
                    got,
                    item["proposed"][field].as_str(),
                    "{what}: webhook {key} vs review --format json"
                );
                assert_eq!(
                    got,
                    written_ann[key].as_str(),
                    "{what}: webhook {key} vs review --write"
                );
            }
            sized += 1;
        }
    }
    (sized, skipped)
}

#[test]
fn example_manifests_get_the_webhooks_values() {
    let (sized, skipped) = check_dir(&repo().join("examples/manifests"));
    assert_eq!((sized, skipped), (5, 0));
}

/// One manifest per workload kind, named after workloads with specs and history so the
/// values are not just Istio's defaults.
const KINDS: &[(&str, &str)] = &[
    (
        "deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: cart, namespace: shop}\nspec:\n  replicas: 6\n  selector: {matchLabels: {app: cart}}\n  template:\n    metadata:\n      labels: {app: cart}\n    spec:\n      containers:\n        - name: master\n          image: shop/cart:1\n          resources: {requests: {cpu: 1000m, memory: 956Mi}}\n",
    ),
    (
        "statefulset.yaml",
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: ledger, namespace: payments}\nspec:\n  serviceName: ledger\n  selector: {matchLabels: {app: ledger}}\n  template:\n    metadata: {labels: {app: ledger}}\n    spec:\n      containers: [{name: ledger, image: payments/ledger:2}]\n",
    ),
    (
        "daemonset.yaml",
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: cart, namespace: shop}\nspec:\n  selector: {matchLabels: {app: cart-agent}}\n  template:\n    metadata: {labels: {app: cart-agent}}\n    spec:\n      containers: [{name: master, image: shop/agent:1}]\n",
    ),
    (
        "job.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: cart, namespace: shop}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: master, image: shop/migrate:1}]\n",
    ),
    (
        "cronjob.yaml",
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: cart, namespace: shop}\nspec:\n  schedule: \"*/5 * * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers: [{name: master, image: shop/report:1}]\n",
    ),
    (
        "replicaset.yaml",
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: cart, namespace: shop}\nspec:\n  selector: {matchLabels: {app: legacy}}\n  template:\n    metadata: {labels: {app: legacy}}\n    spec:\n      containers: [{name: master, image: shop/legacy:1}]\n",
    ),
    (
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: cart-debug\n  namespace: shop\n  labels: {app: cart}\nspec:\n  containers:\n    - name: master\n      image: shop/cart:1\n    - name: istio-proxy\n      image: istio/proxyv2:1.24.0\n      resources:\n        requests: {cpu: 100m, memory: 128Mi}\n        limits: {cpu: \"2\", memory: 1Gi}\n",
    ),
    (
        "rollout.yaml",
        "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: cart, namespace: shop}\nspec:\n  selector: {matchLabels: {app: cart-canary}}\n  strategy: {canary: {steps: [{setWeight: 20}]}}\n  template:\n    metadata: {labels: {app: cart-canary}}\n    spec:\n      containers: [{name: master, image: shop/cart:2}]\n",
    ),
];

#[test]
fn every_workload_kind_gets_the_webhooks_values() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in KINDS {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let (sized, skipped) = check_dir(dir.path());
    assert_eq!((sized, skipped), (KINDS.len(), 0));
}

#[test]
fn skips_match_the_webhook() {
    // (template metadata + spec lines, sized?)
    let variants: &[(&str, bool)] = &[
        ("    spec:\n      hostNetwork: true\n", false),
        ("    spec:\n      hostNetwork: yes\n", false),
        ("    metadata:\n      labels: {sidecar.istio.io/inject: \"False\"}\n    spec: {}\n", false),
        ("    metadata:\n      labels: {sidecar.istio.io/inject: \"no\"}\n    spec: {}\n", false),
        ("    metadata:\n      labels: {sidecar.istio.io/inject: \"off\"}\n    spec: {}\n", false),
        ("    metadata:\n      annotations: {sidecar.istio.io/inject: \"False\"}\n    spec: {}\n", false),
        ("    metadata:\n      annotations: {sidecar.istio.io/inject: \"no\"}\n    spec: {}\n", false),
        ("    metadata:\n      annotations: {sidecar.istio.io/inject: \"off\"}\n    spec: {}\n", false),
        ("    metadata:\n      annotations: {sidecar-sizer.io/skip: \"true\"}\n    spec: {}\n", false),
        // Istio reads the label over the annotation: injected, so sized.
        ("    metadata:\n      labels: {sidecar.istio.io/inject: \"true\"}\n      annotations: {sidecar.istio.io/inject: \"false\"}\n    spec: {}\n", true),
        ("    spec:\n      hostNetwork: false\n", true),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (template, _)) in variants.iter().enumerate() {
        // The container list goes last, under whichever `spec:` the variant wrote.
        let template = template.replace("    spec: {}\n", "    spec:\n");
        let text = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: cart, namespace: shop}}\nspec:\n  template:\n{template}      containers: [{{name: master, image: shop/cart:1}}]\n"
        );
        std::fs::write(dir.path().join(format!("v{i:02}.yaml")), text).unwrap();
    }
    let (sized, skipped) = check_dir(dir.path());
    let want_sized = variants.iter().filter(|v| v.1).count();
    assert_eq!((sized, skipped), (want_sized, variants.len() - want_sized));
}
