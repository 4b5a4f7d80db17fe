//! The Kubernetes API client every cluster source shares (`--spec-configmaps`,
//! `--cluster-constraints`, ...): in cluster, else `--kube-api-url`, else the kubeconfig.

use kube::Client;

/// How to reach the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeSource {
    /// In-cluster service account, else the kubeconfig (`KUBECONFIG`, `~/.kube/config`).
    Default,
    /// An explicit API URL without credentials (e.g. `kubectl proxy`, tests).
    Url(String),
}

pub async fn client(source: &KubeSource) -> anyhow::Result<Client> {
    match source {
        KubeSource::Default => Ok(Client::try_default().await?),
        KubeSource::Url(url) => {
            let config = kube::Config::new(url.parse()?);
            Ok(Client::try_from(config)?)
        }
    }
}

/// The client configuration for `source` (its `cluster_url` names the server in messages).
pub async fn config(source: &KubeSource) -> anyhow::Result<kube::Config> {
    match source {
        KubeSource::Default => Ok(kube::Config::infer().await?),
        KubeSource::Url(url) => Ok(kube::Config::new(url.parse()?)),
    }
}

/// A cluster-wide reflector of `K` filling `writer`'s store: list, then watch (resuming from
/// the last resourceVersion, re-listing after 410 Gone), managedFields dropped (never read,
/// often most of an object's bytes), exponential backoff after errors.
pub fn reflect_all<K>(
    client: Client,
    writer: kube::runtime::reflector::store::Writer<K>,
) -> impl futures::Stream<Item = Result<kube::runtime::watcher::Event<K>, kube::runtime::watcher::Error>>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    use kube::runtime::{reflector, watcher, WatchStreamExt};
    use kube::ResourceExt;
    reflector(
        writer,
        watcher(kube::Api::<K>::all(client), watcher::Config::default())
            .modify(|o| o.managed_fields_mut().clear()),
    )
    .default_backoff()
}
