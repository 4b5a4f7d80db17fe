//! Regression set for the request decoder: every captured review (the fuzz corpus under
//! `fuzz/corpus/admission`, the fixtures and the examples) and a set of edits of them that
//! touch every field the decoder reads (types, nulls, missing parts, other operations),
//! answered in enforce and dry-run mode. The expected answers in
//! `tests/golden/replay.json` were recorded with the decoder that parsed the whole pod into
//! k8s-openapi's typed `Pod` (before the lean view), so they are an independent oracle for
//! the lean decoder: same bytes out for the same bytes in.
//! `UPDATE_GOLDEN=1 cargo test --test replay` rewrites them after a reviewed change.

mod common;

use serde_json::{json, Value};
use sidecar_sizer::engine::pipeline::Snapshots;
use sidecar_sizer::engine::spec::SpecStore;
use sidecar_sizer::sources::history::{load_history_file, UsageSnapshot};
use sidecar_sizer::webhook::wire::{review, Mode, Settings};
use std::collections::BTreeMap;

type Edit = (&'static str, fn(&mut Value));

/// Edits of a review: each touches something the decoder reads.
fn edits() -> Vec<Edit> {
    fn obj(v: &mut Value) -> &mut Value {
        &mut v["request"]["object"]
    }
    fn first_container(v: &mut Value) -> &mut Value {
        obj(v).pointer_mut("/spec/containers/0").unwrap()
    }
    vec![
        ("as-is", |_| {}),
        ("no-object", |v| {
            v["request"].as_object_mut().unwrap().remove("object");
        }),
        ("null-object", |v| *obj(v) = Value::Null),
        ("object-not-a-map", |v| *obj(v) = json!("pod")),
        ("no-spec", |v| {
            obj(v).as_object_mut().unwrap().remove("spec");
        }),
        ("null-metadata", |v| obj(v)["metadata"] = Value::Null),
        ("name-number", |v| obj(v)["metadata"]["name"] = json!(7)),
        ("labels-null", |v| {
            obj(v)["metadata"]["labels"] = Value::Null
        }),
        ("label-value-number", |v| {
            obj(v)["metadata"]["labels"] = json!({"app": 3})
        }),
        ("annotations-list", |v| {
            obj(v)["metadata"]["annotations"] = json!(["a"])
        }),
        ("opt-out-label", |v| {
            obj(v)["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false")
        }),
        ("explicit-annotations", |v| {
            obj(v)["metadata"]["annotations"] = json!({
                "sidecar.istio.io/proxyCPU": "300m",
                "sidecar.istio.io/proxyMemory": "1Gi"
            })
        }),
        ("dry-run-annotation", |v| {
            obj(v)["metadata"]["annotations"]["sidecar-sizer.io/mode"] = json!("dry-run")
        }),
        ("skip-annotation", |v| {
            obj(v)["metadata"]["annotations"]["sidecar-sizer.io/skip"] = json!("yes")
        }),
        ("owner-refs-null", |v| {
            obj(v)["metadata"]["ownerReferences"] = Value::Null
        }),
        ("owner-ref-missing-uid", |v| {
            if let Some(o) = obj(v)
                .pointer_mut("/metadata/ownerReferences/0")
                .and_then(Value::as_object_mut)
            {
                o.remove("uid");
            }
        }),
        ("owner-statefulset", |v| {
            obj(v)["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db",
                "uid": "5", "controller": true
            }])
        }),
        ("host-network", |v| {
            obj(v)["spec"]["hostNetwork"] = json!(true)
        }),
        ("host-network-string", |v| {
            obj(v)["spec"]["hostNetwork"] = json!("true")
        }),
        ("containers-empty", |v| {
            obj(v)["spec"]["containers"] = json!([])
        }),
        ("containers-null", |v| {
            obj(v)["spec"]["containers"] = Value::Null
        }),
        ("containers-missing", |v| {
            if let Some(s) = obj(v)["spec"].as_object_mut() {
                s.remove("containers");
            }
        }),
        ("container-no-name", |v| {
            if let Some(c) = obj(v)["spec"]["containers"][0].as_object_mut() {
                c.remove("name");
            }
        }),
        ("container-name-number", |v| {
            first_container(v)["name"] = json!(1)
        }),
        ("resources-number-quantity", |v| {
            first_container(v)["resources"] = json!({"limits": {"cpu": 2}})
        }),
        ("resources-bad-quantity", |v| {
            first_container(v)["resources"] =
                json!({"requests": {"cpu": "lots"}, "limits": {"memory": "1Gi"}})
        }),
        ("resources-null", |v| {
            first_container(v)["resources"] = Value::Null
        }),
        ("proxy-last-with-resources", |v| {
            let c = json!({"name": "istio-proxy", "image": "proxyv2",
                "resources": {"requests": {"cpu": "10m", "memory": "40Mi"},
                              "limits": {"cpu": "2", "memory": "1Gi"}}});
            if let Some(list) = obj(v)["spec"]["containers"].as_array_mut() {
                list.push(c);
            }
        }),
        ("two-proxies", |v| {
            let c = json!({"name": "istio-proxy", "image": "proxyv2"});
            if let Some(list) = obj(v)["spec"]["containers"].as_array_mut() {
                list.push(c.clone());
                list.push(c);
            }
        }),
        ("native-sidecar-proxy", |v| {
            obj(v)["spec"]["initContainers"] = json!([
                {"name": "istio-init", "image": "proxyv2"},
                {"name": "istio-proxy", "image": "proxyv2", "restartPolicy": "Always",
                 "resources": {"requests": {"cpu": "100m"}}}
            ])
        }),
        ("init-restart-policy-number", |v| {
            obj(v)["spec"]["initContainers"] = json!([{"name": "x", "restartPolicy": 1}])
        }),
        (
            "pod-level-resources",
            |v| obj(v)["spec"]["resources"] = json!({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "4", "memory": "4Gi"}}),
        ),
        ("pod-level-resources-tight", |v| {
            obj(v)["spec"]["resources"] = json!({"limits": {"cpu": "300m", "memory": "300Mi"}})
        }),
        ("operation-update", |v| {
            v["request"]["operation"] = json!("UPDATE")
        }),
        ("operation-bogus", |v| {
            v["request"]["operation"] = json!("FROB")
        }),
        ("sub-resource", |v| {
            v["request"]["subResource"] = json!("status")
        }),
        (
            "kind-deployment",
            |v| {
                v["request"]["kind"] =
                    json!({"group": "apps", "version": "v1", "kind": "Deployment"})
            },
        ),
        ("no-namespace", |v| {
            v["request"].as_object_mut().unwrap().remove("namespace");
        }),
        ("dry-run-request", |v| v["request"]["dryRun"] = json!(true)),
        ("dry-run-string", |v| v["request"]["dryRun"] = json!("yes")),
        ("uid-number", |v| v["request"]["uid"] = json!(5)),
        ("no-uid", |v| {
            v["request"].as_object_mut().unwrap().remove("uid");
        }),
        ("no-user-info", |v| {
            v["request"].as_object_mut().unwrap().remove("userInfo");
        }),
        ("no-resource", |v| {
            v["request"].as_object_mut().unwrap().remove("resource");
        }),
        ("v1beta1", |v| {
            v["apiVersion"] = json!("admission.k8s.io/v1beta1")
        }),
        ("no-request", |v| {
            v.as_object_mut().unwrap().remove("request");
        }),
    ]
}

fn inputs() -> Vec<(String, Vec<u8>)> {
    let root = common::repo();
    let mut out = Vec::new();
    for dir in [
        "fuzz/corpus/admission",
        "tests/fixtures",
        "examples/reviews",
    ] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for f in files {
            let name = format!("{dir}/{}", f.file_name().unwrap().to_string_lossy());
            let bytes = std::fs::read(&f).unwrap();
            out.push((name.clone(), bytes.clone()));
            if dir != "fuzz/corpus/admission" {
                continue;
            }
            // Edits of each corpus review (the other dirs hold the same reviews).
            let base: Value = serde_json::from_slice(&bytes).unwrap();
            for (edit, f) in edits().into_iter().skip(1) {
                let mut v = base.clone();
                f(&mut v);
                out.push((
                    format!("{name}#{edit}"),
                    serde_json::to_vec_pretty(&v).unwrap(),
                ));
            }
        }
    }
    // Bytes that are not a review at all.
    for (name, b) in [
        ("empty", &b""[..]),
        ("not-json", b"{\"apiVersion\":"),
        ("array", b"[1,2]"),
    ] {
        out.push((format!("raw/{name}"), b.to_vec()));
    }
    out
}

fn answer(body: &[u8], mode: Mode, specs: &SpecStore, usage: &UsageSnapshot) -> Value {
    let cluster = Default::default();
    let snaps = Snapshots {
        specs,
        usage,
        cluster: &cluster,
        mesh: None,
        hpas: None,
    };
    match review(body, mode, &Settings::default(), &snaps) {
        Ok(a) => json!({
            "outcome": a.outcome.as_str(),
            "body": serde_json::from_slice::<Value>(&a.body).unwrap(),
        }),
        Err(bad) => json!({ "bad_request": bad.0 }),
    }
}

#[test]
fn replayed_reviews_answer_as_recorded() {
    let root = common::repo();
    let specs = SpecStore::load_dir(&root.join("examples/specs"), &SpecStore::default());
    let (usage, _) = load_history_file(&root.join("examples/history.csv")).unwrap();
    let mut got = BTreeMap::new();
    for (name, body) in inputs() {
        got.insert(
            name,
            json!({
                "enforce": answer(&body, Mode::Enforce, &specs, &usage),
                "dry-run": answer(&body, Mode::DryRun, &specs, &usage),
            }),
        );
    }
    let path = root.join("tests/golden/replay.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        return;
    }
    let want: BTreeMap<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    let mut differ = Vec::new();
    for (name, w) in &want {
        if &got[name] != w {
            differ.push(format!("{name}:\n  want {w}\n  got  {}", got[name]));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} answers differ:\n{}",
        differ.len(),
        want.len(),
        differ.join("\n")
    );
    // The set exercises every path: patched, reviewed, skipped, error, 400.
    let all = serde_json::to_string(&want).unwrap();
    for outcome in ["patched", "reviewed", "skipped", "error", "bad_request"] {
        assert!(all.contains(outcome), "no {outcome} answer in the set");
    }
}

/// The answers above come from the lean view, not from the typed fallback: it decodes
/// every captured review (and the edits that stay well typed), and the pod it rebuilds
/// carries what the typed decoder read for every field the pipeline uses.
#[test]
fn lean_view_decodes_the_captured_reviews() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::core::admission::AdmissionReview;
    use sidecar_sizer::webhook::wire::decode_pod;
    let mut lean = 0;
    let all = inputs();
    for (name, body) in &all {
        let typed = serde_json::from_slice::<AdmissionReview<Pod>>(body).ok();
        let Ok(pod) = decode_pod(body) else {
            assert!(
                name.contains('#') || name.starts_with("raw/"),
                "{name}: a captured review the lean view cannot decode"
            );
            continue;
        };
        lean += 1;
        let (Some(pod), Some(typed)) = (pod, typed.and_then(|t| t.request?.object)) else {
            continue;
        };
        let (m, t) = (&pod.metadata, &typed.metadata);
        assert_eq!(
            (&m.name, &m.generate_name, &m.namespace),
            (&t.name, &t.generate_name, &t.namespace),
            "{name}"
        );
        assert_eq!(
            (&m.labels, &m.annotations, &m.owner_references),
            (&t.labels, &t.annotations, &t.owner_references),
            "{name}"
        );
        let (Some(s), Some(ts)) = (&pod.spec, &typed.spec) else {
            assert_eq!(pod.spec.is_none(), typed.spec.is_none(), "{name}");
            continue;
        };
        assert_eq!(
            (
                &s.host_network,
                &s.resources,
                &s.overhead,
                &s.active_deadline_seconds
            ),
            (
                &ts.host_network,
                &ts.resources,
                &ts.overhead,
                &ts.active_deadline_seconds
            ),
            "{name}"
        );
        let strip = |cs: &[k8s_openapi::api::core::v1::Container]| {
            cs.iter()
                .map(|c| {
                    (
                        c.name.clone(),
                        c.resources.clone(),
                        c.restart_policy.clone(),
                        c.image.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&s.containers), strip(&ts.containers), "{name}");
        assert_eq!(
            s.init_containers.as_deref().map(strip),
            ts.init_containers.as_deref().map(strip),
            "{name}"
        );
    }
    // Every captured review and the well-typed edits (all but the 13 mistyped edits of each, and the raw
    // bytes) go the lean way.
    assert!(
        lean * 3 > all.len() * 2,
        "only {lean} of {} decoded lean",
        all.len()
    );
}
