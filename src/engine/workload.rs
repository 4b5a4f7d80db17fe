//! Which workload a pod belongs to (DESIGN §5).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use std::fmt;

/// The kind of object a pod's spec and history are keyed under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    /// No owner: named from labels, generateName or the pod name.
    Pod,
    /// An owner kind we do not know (e.g. an Argo Rollout): named after the owner.
    Other(String),
}

impl WorkloadKind {
    pub fn as_str(&self) -> &str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::ReplicaSet => "ReplicaSet",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::Job => "Job",
            WorkloadKind::CronJob => "CronJob",
            WorkloadKind::Pod => "Pod",
            WorkloadKind::Other(k) => k,
        }
    }
}

/// A pod's workload: specs (`SPEC_DIR/<namespace>/<name>.yaml`) and history are keyed by
/// namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Workload {
    pub namespace: String,
    pub kind: WorkloadKind,
    pub name: String,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} ({})",
            self.namespace,
            self.name,
            self.kind.as_str()
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    #[error("request has no namespace")]
    NoNamespace,
    #[error("cannot name the workload: no owner, no app labels, no generateName and no name")]
    NoName,
}

/// Identify the workload of `pod`. `request_namespace` is `request.namespace`, which the
/// apiserver always sets for pods (the pod's own `metadata.namespace` may be empty).
pub fn identify(pod: &Pod, request_namespace: Option<&str>) -> Result<Workload, WorkloadError> {
    let meta = &pod.metadata;
    let namespace = request_namespace
        .filter(|ns| !ns.is_empty())
        .or(meta.namespace.as_deref().filter(|ns| !ns.is_empty()))
        .ok_or(WorkloadError::NoNamespace)?
        .to_string();
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    let owner = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| owners.first());
    let (kind, name) = match owner {
        Some(owner) => from_owner(owner, pod),
        None => (WorkloadKind::Pod, name_without_owner(pod)),
    };
    if name.is_empty() {
        return Err(WorkloadError::NoName);
    }
    Ok(Workload {
        namespace,
        kind,
        name,
    })
}

fn from_owner(owner: &OwnerReference, pod: &Pod) -> (WorkloadKind, String) {
    let name = owner.name.clone();
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let hash = label(pod, "pod-template-hash");
            match hash.and_then(|h| strip_dash_suffix(&name, h)) {
                Some(deployment) => (WorkloadKind::Deployment, deployment.to_string()),
                None => (WorkloadKind::ReplicaSet, name),
            }
        }
        "StatefulSet" => (WorkloadKind::StatefulSet, name),
        "DaemonSet" => (WorkloadKind::DaemonSet, name),
        "Job" => match cronjob_of(&name) {
            Some(cron) => (WorkloadKind::CronJob, cron.to_string()),
            None => (WorkloadKind::Job, name),
        },
        other => (WorkloadKind::Other(other.to_string()), name),
    }
}

/// `name` minus `-<suffix>`, if it ends with exactly that and something is left.
fn strip_dash_suffix<'a>(name: &'a str, suffix: &str) -> Option<&'a str> {
    let base = name.strip_suffix(suffix)?.strip_suffix('-')?;
    (!base.is_empty()).then_some(base)
}

/// A Job created by a CronJob is named `<cronjob>-<digits>` (scheduled time in minutes).
fn cronjob_of(job: &str) -> Option<&str> {
    let (base, digits) = job.rsplit_once('-')?;
    (!base.is_empty() && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(base)
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn name_without_owner(pod: &Pod) -> String {
    if let Some(v) = label(pod, "app.kubernetes.io/name").or_else(|| label(pod, "app")) {
        return v.to_string();
    }
    let meta = &pod.metadata;
    if let Some(g) = meta.generate_name.as_deref().filter(|g| !g.is_empty()) {
        return g.strip_suffix('-').unwrap_or(g).to_string();
    }
    meta.name.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn owned(kind: &str, name: &str, labels: serde_json::Value) -> Pod {
        pod(json!({"metadata": {"labels": labels, "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "u", "controller": true}
        ]}, "spec": {"containers": []}}))
    }

    fn id(p: &Pod) -> (WorkloadKind, String) {
        let w = identify(p, Some("ns")).unwrap();
        assert_eq!(w.namespace, "ns");
        (w.kind, w.name)
    }

    #[test]
    fn replicaset_to_deployment() {
        let p = owned(
            "ReplicaSet",
            "cart-7d9f8c6b5",
            json!({"pod-template-hash": "7d9f8c6b5"}),
        );
        assert_eq!(id(&p), (WorkloadKind::Deployment, "cart".into()));
        // A bare ReplicaSet (no deployment hash) is its own workload.
        let p = owned("ReplicaSet", "legacy", json!({}));
        assert_eq!(id(&p), (WorkloadKind::ReplicaSet, "legacy".into()));
        // Hash label that does not match the RS name: keep the RS name.
        let p = owned(
            "ReplicaSet",
            "cart-abc",
            json!({"pod-template-hash": "zzz"}),
        );
        assert_eq!(id(&p), (WorkloadKind::ReplicaSet, "cart-abc".into()));
    }

    #[test]
    fn other_owners() {
        assert_eq!(
            id(&owned("StatefulSet", "db", json!({}))),
            (WorkloadKind::StatefulSet, "db".into())
        );
        assert_eq!(
            id(&owned("DaemonSet", "agent", json!({}))),
            (WorkloadKind::DaemonSet, "agent".into())
        );
        assert_eq!(
            id(&owned("Job", "migrate", json!({}))),
            (WorkloadKind::Job, "migrate".into())
        );
        assert_eq!(
            id(&owned("Job", "nightly-report-29012345", json!({}))),
            (WorkloadKind::CronJob, "nightly-report".into())
        );
        assert_eq!(
            id(&owned("Rollout", "web", json!({}))),
            (WorkloadKind::Other("Rollout".into()), "web".into())
        );
    }

    #[test]
    fn controller_owner_wins() {
        let p = pod(json!({"metadata": {"ownerReferences": [
            {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "a"},
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "b", "controller": true}
        ]}, "spec": {"containers": []}}));
        assert_eq!(id(&p), (WorkloadKind::StatefulSet, "db".into()));
    }

    #[test]
    fn no_owner_fallbacks() {
        let p = pod(
            json!({"metadata": {"name": "x", "generateName": "g-", "labels": {"app": "a", "app.kubernetes.io/name": "k"}}}),
        );
        assert_eq!(id(&p), (WorkloadKind::Pod, "k".into()));
        let p =
            pod(json!({"metadata": {"name": "x", "generateName": "g-", "labels": {"app": "a"}}}));
        assert_eq!(id(&p), (WorkloadKind::Pod, "a".into()));
        let p = pod(json!({"metadata": {"name": "x", "generateName": "g-"}}));
        assert_eq!(id(&p), (WorkloadKind::Pod, "g".into()));
        let p = pod(json!({"metadata": {"name": "x"}}));
        assert_eq!(id(&p), (WorkloadKind::Pod, "x".into()));
        let p = pod(json!({"metadata": {}}));
        assert_eq!(identify(&p, Some("ns")), Err(WorkloadError::NoName));
        assert_eq!(identify(&p, None), Err(WorkloadError::NoNamespace));
    }

    #[test]
    fn namespace_from_pod_when_request_has_none() {
        let p = pod(json!({"metadata": {"name": "x", "namespace": "podns"}}));
        assert_eq!(identify(&p, None).unwrap().namespace, "podns");
        assert_eq!(identify(&p, Some("req")).unwrap().namespace, "req");
    }
}
