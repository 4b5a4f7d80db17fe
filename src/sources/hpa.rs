//! HorizontalPodAutoscalers (`autoscaling/v2`) of every namespace (`serve --hpa-aware`),
//! kept current by a kube-runtime reflector (list, then watch; resume after a disconnect,
//! re-list after `410 Gone`). After each complete list and each change a fresh
//! [`HpaSnapshot`] is swapped into `Shared::hpas`. Nothing here runs per admission; a
//! failing watch keeps the last good snapshot and is retried with backoff.

use crate::engine::hpa::HpaSnapshot;
use crate::metrics::KindLabel;
use crate::sources::kube::reflect_all;
use crate::webhook::serve::Shared;
use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::runtime::reflector;
use kube::runtime::watcher;
use kube::Client;
use std::sync::Arc;

/// Metric label (`reload_failures{kind}`) and log name.
pub const HPAS: &str = "horizontalpodautoscalers";

/// Events handled in one batch at most before the snapshot is rebuilt.
const BATCH: usize = 256;

/// Watch HPAs in all namespaces and keep `shared.hpas` current (a no-op when `--hpa-aware`
/// is off). `synced` is notified after every rebuild; start-up waits for the first.
pub async fn watch(client: Client, shared: Arc<Shared>, synced: Arc<tokio::sync::Notify>) {
    let Some(target) = shared.hpas.as_ref() else {
        return;
    };
    let (reader, writer) = reflector::store::<HorizontalPodAutoscaler>();
    let events = reflect_all(client, writer);
    let mut batches = events.boxed().ready_chunks(BATCH);
    let mut listed = false;
    while let Some(batch) = batches.next().await {
        let mut rebuild = false;
        for e in batch {
            match e {
                Ok(watcher::Event::InitDone) => {
                    listed = true;
                    rebuild = true;
                }
                Ok(watcher::Event::Apply(_)) | Ok(watcher::Event::Delete(_)) => rebuild = true,
                Ok(_) => {}
                Err(e) => {
                    shared
                        .metrics
                        .reload_failures
                        .get_or_create(&KindLabel { kind: HPAS })
                        .inc();
                    tracing::warn!(
                        kind = HPAS,
                        error = %e,
                        "HPA watch error; last good snapshot kept, retrying with backoff"
                    );
                }
            }
        }
        if !(rebuild && listed) {
            continue;
        }
        let state = reader.state();
        let next = HpaSnapshot::build(state.iter().map(|h| &**h));
        if !target.load().synced {
            tracing::info!(hpas = state.len(), "horizontalpodautoscalers listed");
        }
        target.store(Arc::new(next));
        synced.notify_one();
    }
}
