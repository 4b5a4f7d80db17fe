//! The webhook configuration in manifests/ matches DESIGN §4.

use serde_yaml_ng::Value;

fn load(path: &str) -> Value {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    serde_yaml_ng::from_str(&std::fs::read_to_string(&full).unwrap()).unwrap()
}

#[test]
fn two_webhooks_as_designed() {
    let cfg = load("manifests/base/mutatingwebhook.yaml");
    assert_eq!(cfg["kind"], "MutatingWebhookConfiguration");
    // The apiserver calls configurations in name order: ours must sort before every Istio
    // configuration name (Istio's injector does not reinvoke, so it must run after us).
    let name = cfg["metadata"]["name"].as_str().unwrap();
    for istio in [
        "istio-sidecar-injector",
        "istio-sidecar-injector-canary",
        "istio-sidecar-injector-1-24-0",
        "istio-revision-tag-default",
        "istio-revision-tag-prod",
        "istiod-default-validator",
    ] {
        assert!(name < istio, "{name} does not sort before {istio}");
    }
    let hooks = cfg["webhooks"].as_sequence().unwrap();
    assert_eq!(hooks.len(), 2);
    for (hook, mode, path) in [
        (&hooks[0], "enforce", "/mutate"),
        (&hooks[1], "dry-run", "/dry-run"),
    ] {
        assert_eq!(hook["clientConfig"]["service"]["path"], path);
        let exprs = hook["namespaceSelector"]["matchExpressions"]
            .as_sequence()
            .unwrap();
        assert!(exprs
            .iter()
            .any(|e| e["key"] == "sidecar-sizer.io/mode" && e["values"][0] == mode));
        let excluded = exprs.iter().find(|e| e["operator"] == "NotIn").unwrap();
        for ns in ["kube-system", "kube-public", "kube-node-lease"] {
            assert!(excluded["values"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|v| v == ns));
        }
        assert_eq!(hook["failurePolicy"], "Ignore");
        assert_eq!(hook["timeoutSeconds"], 2);
        assert_eq!(hook["sideEffects"], "None");
        assert_eq!(hook["reinvocationPolicy"], "IfNeeded");
        assert_eq!(hook["admissionReviewVersions"][0], "v1");
        assert_eq!(hook["rules"][0]["operations"][0], "CREATE");
        assert_eq!(hook["rules"][0]["resources"][0], "pods");
        assert_eq!(
            hook["objectSelector"]["matchExpressions"][0]["key"],
            "sidecar-sizer.io/self"
        );
    }
    // The sizer's own pods carry the label the objectSelector excludes.
    let deploy = load("manifests/base/deployment.yaml");
    assert_eq!(
        deploy["spec"]["template"]["metadata"]["labels"]["sidecar-sizer.io/self"],
        "true"
    );
}

/// The Deployment's args are valid `serve` flags and turn on both cluster sources; the
/// ClusterRole lets them list and watch what they read, and nothing more.
#[test]
fn deployment_flags_and_rbac_agree() {
    use clap::Parser;
    use sidecar_sizer::cli::{Cli, Command};
    let deploy = load("manifests/base/deployment.yaml");
    let args: Vec<String> = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let cli = Cli::try_parse_from(std::iter::once("sidecar-sizer".to_string()).chain(args))
        .unwrap_or_else(|e| panic!("deployment args: {e}"));
    let Command::Serve(serve) = cli.command else {
        panic!("the deployment runs serve")
    };
    let config = serve.to_config();
    assert!(config.spec_configmaps.is_some());
    assert!(config.cluster_constraints.is_some());
    assert!(config.metrics_api.is_some());
    assert!(config.mesh.is_some());
    assert!(config.hpa_aware.is_some());
    // Durable history is in the cluster (checkpoints) or Prometheus: no emptyDir state.
    assert!(config.state_dir.is_none());
    let env = &deploy["spec"]["template"]["spec"]["containers"][0]["env"];
    let pod_ns = env
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "POD_NAMESPACE")
        .expect("POD_NAMESPACE");
    assert_eq!(
        pod_ns["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );

    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/rbac.yaml"),
    )
    .unwrap();
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .collect();
    let rules = |kind: &str| -> Vec<(String, Vec<String>)> {
        let role = docs.iter().find(|d| d["kind"] == kind).unwrap();
        let mut out = Vec::new();
        for rule in role["rules"].as_sequence().unwrap() {
            let verbs: Vec<String> = rule["verbs"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            for g in rule["apiGroups"].as_sequence().unwrap() {
                for r in rule["resources"].as_sequence().unwrap() {
                    let g = g.as_str().unwrap();
                    let r = r.as_str().unwrap();
                    let name = if g.is_empty() {
                        r.to_string()
                    } else {
                        format!("{g}/{r}")
                    };
                    out.push((name, verbs.clone()));
                }
            }
        }
        out.sort();
        out
    };
    // Cluster-wide: read-only, on exactly what the sources read.
    let cluster = rules("ClusterRole");
    for (r, verbs) in &cluster {
        assert!(
            verbs
                .iter()
                .all(|v| ["get", "list", "watch"].contains(&v.as_str())),
            "{r}: {verbs:?} is not read-only"
        );
    }
    let names: Vec<&str> = cluster.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        names,
        [
            "autoscaling/horizontalpodautoscalers",
            "configmaps",
            "limitranges",
            "metrics.k8s.io/pods",
            "namespaces",
            "networking.istio.io/serviceentries",
            "networking.istio.io/sidecars",
            "pods",
            "resourcequotas",
            "services"
        ]
    );
    // Writes: a namespaced Role (no namespace field: the kustomization puts it in the
    // sizer's), on the checkpoint ConfigMaps and the Lease only, never delete.
    let role = docs.iter().find(|d| d["kind"] == "Role").unwrap();
    assert!(role["metadata"]["namespace"].is_null());
    let own = rules("Role");
    let names: Vec<&str> = own.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(names, ["configmaps", "coordination.k8s.io/leases"]);
    for (r, verbs) in &own {
        assert!(
            !verbs.iter().any(|v| v == "delete" || v == "*"),
            "{r}: {verbs:?}"
        );
    }
    assert!(docs
        .iter()
        .any(|d| d["kind"] == "RoleBinding" && d["roleRef"]["name"] == role["metadata"]["name"]));
}

/// The image tag the manifests deploy is the crate version `make image` tags, set in one
/// place (the base kustomization's `images:`).
#[test]
fn image_tag_is_the_crate_version_in_one_place() {
    let k = load("manifests/base/kustomization.yaml");
    let images = k["images"].as_sequence().expect("images:");
    assert_eq!(images.len(), 1);
    assert_eq!(images[0]["name"], "sidecar-sizer");
    assert_eq!(
        images[0]["newTag"].as_str(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let deploy = load("manifests/base/deployment.yaml");
    let image = deploy["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert_eq!(
        image, "sidecar-sizer",
        "no tag in the Deployment: kustomize sets it"
    );
}
