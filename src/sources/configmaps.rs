//! Team specs from ConfigMaps labelled `sidecar-sizer.io/spec=true`, in all namespaces,
//! kept current by a kube-runtime watcher (list, then watch; resumes from the last
//! resourceVersion after a disconnect, re-lists when told to). No API call per admission.

use crate::engine::spec::SpecStore;
use crate::metrics::KindLabel;
use crate::webhook::serve::Shared;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const SPEC_LABEL: &str = "sidecar-sizer.io/spec=true";

/// Watch labelled ConfigMaps; after every change rebuild the ConfigMap spec store and the
/// combined store. `synced` is notified after the first complete list.
pub async fn watch(client: Client, shared: Arc<Shared>, synced: Arc<tokio::sync::Notify>) {
    let api: Api<ConfigMap> = Api::all(client);
    let config = watcher::Config::default().labels(SPEC_LABEL);
    let (reader, writer) = reflector::store::<ConfigMap>();
    let mut stream = reflector(writer, watcher(api, config))
        .default_backoff()
        .boxed();
    let mut initialised = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) | Ok(watcher::Event::InitApply(_)) => continue,
            Ok(watcher::Event::InitDone) => {
                initialised = true;
            }
            Ok(_) => {}
            Err(e) => {
                shared
                    .metrics
                    .reload_failures
                    .get_or_create(&KindLabel { kind: "configmaps" })
                    .inc();
                tracing::warn!(error = %e, "configmap watch error; retrying with backoff");
                continue;
            }
        }
        if !initialised {
            continue;
        }
        let state = reader.state();
        let entries: Vec<(String, String, String, BTreeMap<String, String>)> = state
            .iter()
            .map(|cm| {
                (
                    cm.metadata.namespace.clone().unwrap_or_default(),
                    cm.metadata.name.clone().unwrap_or_default(),
                    cm.metadata.resource_version.clone().unwrap_or_default(),
                    cm.data.clone().unwrap_or_default(),
                )
            })
            .collect();
        let prev = shared.cm_specs.load_full();
        // Parsing every spec is CPU work: off the async workers.
        let (entries, next) = match tokio::task::spawn_blocking(move || {
            let next = SpecStore::from_configmaps(
                entries
                    .iter()
                    .map(|(ns, n, v, d)| (ns.as_str(), n.as_str(), v.as_str(), d)),
                &prev,
            );
            (entries, next)
        })
        .await
        {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return, // the runtime is shutting down
        };
        let prev = shared.cm_specs.load_full();
        for e in &next.errors {
            if !prev.errors.contains(e) {
                tracing::warn!(source = %e.path.display(), error = %e.message, "spec error");
            }
        }
        tracing::info!(
            configmaps = entries.len(),
            specs = next.len(),
            "configmap specs updated"
        );
        shared.cm_specs.store(Arc::new(next));
        let sh = shared.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || sh.recombine_specs()).await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
            return;
        }
        synced.notify_one();
    }
}
