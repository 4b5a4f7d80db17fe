//! Which workload a pod belongs to (DESIGN §5).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
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
    /// An Argo Rollout: its ReplicaSets' pods carry `rollouts-pod-template-hash`.
    Rollout,
    /// No owner: named from labels, generateName or the pod name.
    Pod,
    /// A controller kind we do not know: named after the owner.
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
            WorkloadKind::Rollout => "Rollout",
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
    // Only the controller names the workload: other owners (a ConfigMap, a custom
    // garbage-collection parent) do not create the pod and say nothing of its workload.
    let owner = meta
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|o| o.controller == Some(true));
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
            // Argo Rollouts name their ReplicaSets `<rollout>-<hash>` and label the pods
            // `rollouts-pod-template-hash` (not `pod-template-hash`):
            // https://argo-rollouts.readthedocs.io/en/stable/features/specification/
            let rollout =
                label(pod, "rollouts-pod-template-hash").and_then(|h| strip_dash_suffix(&name, h));
            if let Some(rollout) = rollout {
                return (WorkloadKind::Rollout, rollout.to_string());
            }
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
        "Rollout" => (WorkloadKind::Rollout, name),
        other => (WorkloadKind::Other(other.to_string()), name),
    }
}

/// `name` minus `-<suffix>`, if it ends with exactly that and something is left.
fn strip_dash_suffix<'a>(name: &'a str, suffix: &str) -> Option<&'a str> {
    let base = name.strip_suffix(suffix)?.strip_suffix('-')?;
    (!base.is_empty()).then_some(base)
}

/// A Job created by a CronJob is named `<cronjob>-<scheduled time in minutes>`: 8 or more
/// digits (`getJobName` in Kubernetes' pkg/controller/cronjob/utils.go). A Job named
/// `backup-42` is not a CronJob's.
pub fn cronjob_of(job: &str) -> Option<&str> {
    let (base, digits) = job.rsplit_once('-')?;
    (!base.is_empty() && digits.len() >= 8 && digits.bytes().all(|b| b.is_ascii_digit()))
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

/// Give a pod template the metadata its controller puts on the pods it creates, so that
/// [`identify`] names the template's pods as it will name the real ones:
/// a Deployment's pods are owned by ReplicaSet `<name>-<pod-template-hash>` and carry that
/// label; an Argo Rollout's likewise with `rollouts-pod-template-hash`; a CronJob's by Job
/// `<name>-<scheduled minutes>`; StatefulSet, DaemonSet, ReplicaSet and Job pods by the
/// object itself. A bare Pod keeps its own metadata.
pub fn as_created_by(meta: &mut ObjectMeta, kind: &WorkloadKind, name: &str) {
    // Any hash works: identity strips whatever the label says from the ReplicaSet name.
    const HASH: &str = "5d8f7c9b6";
    let (owner_kind, owner_name, hash_label) = match kind {
        WorkloadKind::Pod => return,
        WorkloadKind::Deployment => (
            "ReplicaSet",
            format!("{name}-{HASH}"),
            Some("pod-template-hash"),
        ),
        WorkloadKind::Rollout => (
            "ReplicaSet",
            format!("{name}-{HASH}"),
            Some("rollouts-pod-template-hash"),
        ),
        // The scheduled time in minutes since the epoch: 8 digits.
        WorkloadKind::CronJob => ("Job", format!("{name}-29000000"), None),
        other => (other.as_str(), name.to_string(), None),
    };
    if let Some(label) = hash_label {
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(label.to_string(), HASH.to_string());
    }
    meta.owner_references = Some(vec![OwnerReference {
        api_version: String::new(),
        kind: owner_kind.to_string(),
        name: owner_name,
        uid: String::new(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
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
            (WorkloadKind::Rollout, "web".into())
        );
        // A Job whose name ends in a few digits is its own workload, not a CronJob's.
        assert_eq!(
            id(&owned("Job", "backup-42", json!({}))),
            (WorkloadKind::Job, "backup-42".into())
        );
        assert_eq!(
            id(&owned("Job", "backup-2024010", json!({}))),
            (WorkloadKind::Job, "backup-2024010".into())
        );
        assert_eq!(
            id(&owned("Job", "backup-29012345", json!({}))),
            (WorkloadKind::CronJob, "backup".into())
        );
        assert_eq!(
            id(&owned("Widget", "w1", json!({}))),
            (WorkloadKind::Other("Widget".into()), "w1".into())
        );
    }

    #[test]
    fn argo_rollout_replicasets() {
        let p = owned(
            "ReplicaSet",
            "checkout-6c9f7d8b4",
            json!({"rollouts-pod-template-hash": "6c9f7d8b4", "app": "checkout"}),
        );
        assert_eq!(id(&p), (WorkloadKind::Rollout, "checkout".into()));
    }

    #[test]
    fn non_controller_owners_are_ignored() {
        let p = pod(
            json!({"metadata": {"generateName": "shared-config-", "labels": {"app": "cart"},
            "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "shared-config", "uid": "a"}
        ]}, "spec": {"containers": []}}),
        );
        assert_eq!(id(&p), (WorkloadKind::Pod, "cart".into()));
        let p = pod(json!({"metadata": {"name": "one-off", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "b", "controller": false}
        ]}, "spec": {"containers": []}}));
        assert_eq!(id(&p), (WorkloadKind::Pod, "one-off".into()));
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
