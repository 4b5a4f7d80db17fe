//! LimitRanges and ResourceQuotas of every namespace (`--cluster-constraints`, DESIGN §8),
//! kept current by two kube-runtime reflectors (list, then watch; resume from the last
//! resourceVersion after a disconnect, re-list after `410 Gone`). After the first complete
//! list of both kinds, and after every change, a fresh [`ClusterSnapshot`] is swapped into
//! `Shared::cluster`. Nothing here runs per admission; a failing watch keeps the last
//! good snapshot in force and is retried with backoff.

use crate::engine::constraints::{ClusterSnapshot, NamespaceConstraints};
use crate::metrics::KindLabel;
use crate::sources::kube::reflect_all;
use crate::webhook::serve::Shared;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::Client;
use std::collections::HashMap;
use std::sync::Arc;

/// Metric label (`reload_failures{kind}`) and log name of each watched kind.
pub const LIMIT_RANGES: &str = "limitranges";
pub const RESOURCE_QUOTAS: &str = "resourcequotas";

/// Events handled in one batch at most before the snapshot is rebuilt.
const BATCH: usize = 256;

/// Group objects by namespace, each list sorted by name. Objects without a namespace
/// (impossible for these namespaced kinds) are ignored.
pub fn build_snapshot(
    limit_ranges: &[Arc<LimitRange>],
    quotas: &[Arc<ResourceQuota>],
) -> ClusterSnapshot {
    let mut by_namespace: HashMap<String, NamespaceConstraints> = HashMap::new();
    for lr in limit_ranges {
        if let Some(ns) = lr.metadata.namespace.as_deref() {
            by_namespace
                .entry(ns.to_string())
                .or_default()
                .limit_ranges
                .push((**lr).clone());
        }
    }
    for q in quotas {
        if let Some(ns) = q.metadata.namespace.as_deref() {
            by_namespace
                .entry(ns.to_string())
                .or_default()
                .quotas
                .push((**q).clone());
        }
    }
    for c in by_namespace.values_mut() {
        c.limit_ranges
            .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        c.quotas
            .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    }
    ClusterSnapshot {
        by_namespace,
        synced: true,
    }
}

/// Which reflector an event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    LimitRanges,
    Quotas,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::LimitRanges => LIMIT_RANGES,
            Kind::Quotas => RESOURCE_QUOTAS,
        }
    }
}

/// What one watcher event means for the snapshot.
enum Step {
    /// A (re-)list is in progress: the store swaps its contents only at its end.
    Listing,
    /// A complete list landed (first sync or a re-list).
    Listed,
    /// An object was added, changed or deleted.
    Changed,
    Failed,
}

fn step<K>(kind: Kind, shared: &Shared, event: Result<watcher::Event<K>, watcher::Error>) -> Step {
    match event {
        Ok(watcher::Event::Init) | Ok(watcher::Event::InitApply(_)) => Step::Listing,
        Ok(watcher::Event::InitDone) => Step::Listed,
        Ok(watcher::Event::Apply(_)) | Ok(watcher::Event::Delete(_)) => Step::Changed,
        Err(e) => {
            shared
                .metrics
                .reload_failures
                .get_or_create(&KindLabel { kind: kind.label() })
                .inc();
            tracing::warn!(
                kind = kind.label(),
                error = %e,
                "cluster constraints watch error; last good snapshot kept, retrying with backoff"
            );
            Step::Failed
        }
    }
}

/// Watch LimitRanges and ResourceQuotas in all namespaces and keep `shared.cluster`
/// current. `synced` is notified after the first complete list of both kinds (and after
/// every later rebuild; `start` only waits for the first).
pub async fn watch(client: Client, shared: Arc<Shared>, synced: Arc<tokio::sync::Notify>) {
    let (lr_reader, lr_writer) = reflector::store::<LimitRange>();
    let (rq_reader, rq_writer) = reflector::store::<ResourceQuota>();
    let limit_ranges = reflect_all(client.clone(), lr_writer)
        .map(|e| (Kind::LimitRanges, step(Kind::LimitRanges, &shared, e)));
    let quotas =
        reflect_all(client, rq_writer).map(|e| (Kind::Quotas, step(Kind::Quotas, &shared, e)));
    let mut events =
        futures::stream::select(limit_ranges.boxed(), quotas.boxed()).ready_chunks(BATCH);
    let (mut lr_listed, mut rq_listed) = (false, false);
    while let Some(batch) = events.next().await {
        let mut rebuild = false;
        let mut relisted = Vec::new();
        for (kind, s) in batch {
            match s {
                Step::Listed => {
                    let first = match kind {
                        Kind::LimitRanges => !std::mem::replace(&mut lr_listed, true),
                        Kind::Quotas => !std::mem::replace(&mut rq_listed, true),
                    };
                    if !first {
                        relisted.push(kind.label());
                    }
                    rebuild = true;
                }
                Step::Changed => rebuild = true,
                Step::Listing | Step::Failed => {}
            }
        }
        if !(rebuild && lr_listed && rq_listed) {
            continue;
        }
        let first = !shared.cluster.load().synced;
        // Cloning every object into a new snapshot is CPU work: off the async workers.
        let (lr, rq) = (lr_reader.clone(), rq_reader.clone());
        let next = match tokio::task::spawn_blocking(move || snapshot_of(&lr, &rq)).await {
            Ok(next) => next,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return, // the runtime is shutting down
        };
        let (namespaces, lrs, rqs) = (next.by_namespace.len(), lr_reader.len(), rq_reader.len());
        if first || !relisted.is_empty() {
            tracing::info!(
                namespaces,
                limit_ranges = lrs,
                resource_quotas = rqs,
                relisted = ?relisted,
                "cluster constraints listed"
            );
        } else {
            tracing::debug!(
                namespaces,
                limit_ranges = lrs,
                resource_quotas = rqs,
                "cluster constraints updated"
            );
        }
        shared.cluster.store(Arc::new(next));
        synced.notify_one();
    }
}

fn snapshot_of(lr: &Store<LimitRange>, rq: &Store<ResourceQuota>) -> ClusterSnapshot {
    build_snapshot(&lr.state(), &rq.state())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::ResourceExt;

    fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: ns.map(str::to_string),
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        }
    }

    fn lr(ns: Option<&str>, name: &str) -> Arc<LimitRange> {
        Arc::new(LimitRange {
            metadata: meta(ns, name),
            spec: None,
        })
    }

    fn rq(ns: &str, name: &str) -> Arc<ResourceQuota> {
        Arc::new(ResourceQuota {
            metadata: meta(Some(ns), name),
            ..ResourceQuota::default()
        })
    }

    fn names<T: kube::Resource>(v: &[T]) -> Vec<String> {
        v.iter().map(|o| o.name_any()).collect()
    }

    #[test]
    fn grouped_by_namespace_and_sorted_by_name() {
        let snap = build_snapshot(
            &[
                lr(Some("a"), "z"),
                lr(Some("b"), "x"),
                lr(Some("a"), "m"),
                lr(None, "lost"),
            ],
            &[rq("a", "q2"), rq("c", "q"), rq("a", "q1")],
        );
        assert!(snap.synced);
        assert_eq!(snap.by_namespace.len(), 3);
        let a = snap.get("a").unwrap();
        assert_eq!(names(&a.limit_ranges), ["m", "z"]);
        assert_eq!(names(&a.quotas), ["q1", "q2"]);
        assert_eq!(names(&snap.get("b").unwrap().limit_ranges), ["x"]);
        assert!(snap.get("b").unwrap().quotas.is_empty());
        assert_eq!(names(&snap.get("c").unwrap().quotas), ["q"]);
        assert!(
            snap.get("").is_none(),
            "objects without a namespace are ignored"
        );
    }

    #[test]
    fn empty_cluster_is_still_synced() {
        let snap = build_snapshot(&[], &[]);
        assert!(snap.synced);
        assert!(snap.by_namespace.is_empty());
    }
}
