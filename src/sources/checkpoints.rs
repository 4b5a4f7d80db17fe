//! In-cluster state of the metrics-API history (`--metrics-api`): the Lease that lets one
//! replica at a time sample and write, and the checkpoint ConfigMaps every replica loads
//! and follows. Both in the sizer's own namespace.
//!
//! The Lease follows client-go's leader election: a holder renews every `duration / 3`;
//! another replica takes it over only when the record has not changed for a whole
//! `duration` by its OWN clock (no clock comparison between nodes), or when the holder
//! released it. Every write is a replace carrying the resourceVersion that was read, so of
//! two replicas racing for it exactly one wins (the other gets 409 Conflict). A holder
//! counts itself leader only until `0.8 × duration` after the start of its last successful
//! renewal, strictly before anyone else may take over.

use crate::engine::learn::{self, Checkpoint, CheckpointError, History};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::Api;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// Label on every checkpoint ConfigMap.
pub const CHECKPOINT_LABEL: &str = "sidecar-sizer.io/usage-checkpoint";
/// Checkpoint ConfigMaps are named `<prefix>-<shard>`.
pub const CHECKPOINT_PREFIX: &str = "sidecar-sizer-usage";
/// The data key holding a shard.
pub const CHECKPOINT_KEY: &str = "checkpoint.json";
/// Shards are kept under this many bytes (the object limit is 1 MiB).
pub const SHARD_BYTES: usize = 256 * 1024;
pub const LEASE_NAME: &str = "sidecar-sizer-history";

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// A replica's side of the history Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// (resourceVersion, when this replica first saw it): the record's age by our clock.
    observed: Option<(String, Instant)>,
    leader_until: Option<Instant>,
    /// API calls made (for the figures in the README).
    pub calls: u64,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Elector {
        Elector {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            duration: duration.max(Duration::from_secs(1)),
            observed: None,
            leader_until: None,
            calls: 0,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// How often [`Elector::step`] should run.
    pub fn retry_period(&self) -> Duration {
        self.duration / 3
    }

    /// Whether this replica may act as the leader right now.
    pub fn is_leader(&self) -> bool {
        self.leader_until.is_some_and(|t| Instant::now() < t)
    }

    fn spec(&self, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let mine = previous.and_then(|p| p.holder_identity.as_deref()) == Some(&self.identity);
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().clamp(1, i32::MAX as u64) as i32),
            acquire_time: if mine {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if mine || previous.is_none() {
                transitions
            } else {
                transitions + 1
            }),
            ..LeaseSpec::default()
        }
    }

    /// One attempt to acquire or renew. Returns whether this replica leads afterwards.
    pub async fn step(&mut self) -> bool {
        let start = Instant::now();
        let valid_for = self.duration.mul_f64(0.8);
        self.calls += 1;
        let current = match self.api.get_opt(&self.name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, lease = %self.name, "cannot read the history lease");
                return self.is_leader();
            }
        };
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(None)),
            };
            self.calls += 1;
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    tracing::info!(identity = %self.identity, "history lease created; leading");
                    self.leader_until = Some(start + valid_for);
                    true
                }
                Err(e) => {
                    if !is_conflict(&e) {
                        tracing::warn!(error = %e, "cannot create the history lease");
                    }
                    self.leader_until = None;
                    false
                }
            };
        };
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty());
        let was_mine = holder.as_deref() == Some(self.identity.as_str());
        if !was_mine {
            self.leader_until = None;
            if holder.is_some() {
                let first_seen = match &self.observed {
                    Some((seen_rv, at)) if *seen_rv == rv => *at,
                    _ => {
                        self.observed = Some((rv.clone(), start));
                        start
                    }
                };
                let their_duration = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.lease_duration_seconds)
                    .map_or(self.duration, |s| Duration::from_secs(s.max(1) as u64));
                if start.duration_since(first_seen) < their_duration {
                    return false;
                }
                tracing::info!(
                    previous = holder.as_deref().unwrap_or(""),
                    "history lease expired; taking over"
                );
            }
        }
        lease.spec = Some(self.spec(lease.spec.as_ref()));
        self.calls += 1;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                if !was_mine {
                    tracing::info!(identity = %self.identity, "history lease acquired; leading");
                }
                self.observed = updated.metadata.resource_version.map(|v| (v, start));
                self.leader_until = Some(start + valid_for);
                true
            }
            Err(e) => {
                if !is_conflict(&e) {
                    tracing::warn!(error = %e, "cannot renew the history lease");
                    // Still ours until the deadline, if it was.
                    return was_mine && self.is_leader();
                }
                self.leader_until = None;
                false
            }
        }
    }

    /// Give the Lease up (at shutdown) so another replica takes over at once.
    pub async fn release(&mut self) {
        if !self.is_leader() {
            return;
        }
        self.leader_until = None;
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(identity = %self.identity, "history lease released"),
            Err(e) => tracing::warn!(error = %e, "cannot release the history lease"),
        }
    }
}

/// A checkpoint ConfigMap's shard, decoded; errors name the ConfigMap.
pub fn decode_configmap(cm: &ConfigMap) -> Result<Checkpoint, String> {
    let name = cm.metadata.name.as_deref().unwrap_or("?");
    let Some(text) = cm.data.as_ref().and_then(|d| d.get(CHECKPOINT_KEY)) else {
        return Err(format!("configmap {name}: no {CHECKPOINT_KEY} key"));
    };
    learn::decode_checkpoint(text).map_err(|e| format!("configmap {name}: {e}"))
}

/// The history held by a set of checkpoint ConfigMaps; shards that cannot be used are
/// returned as (name, error) and left out.
pub fn load(configmaps: &[ConfigMap]) -> (History, Vec<(String, CheckpointError)>) {
    let mut shards = Vec::new();
    let mut errors = Vec::new();
    for cm in configmaps {
        let name = cm.metadata.name.clone().unwrap_or_default();
        let Some(text) = cm.data.as_ref().and_then(|d| d.get(CHECKPOINT_KEY)) else {
            errors.push((
                name,
                CheckpointError::Corrupt(format!("no {CHECKPOINT_KEY} key")),
            ));
            continue;
        };
        match learn::decode_checkpoint(text) {
            Ok(c) => shards.push(c),
            Err(e) => errors.push((name, e)),
        }
    }
    (learn::history_from_checkpoints(shards), errors)
}

/// Why a checkpoint write stopped.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("lost the history lease before writing {0}")]
    NotLeader(String),
    #[error("{0} changed since it was read (409 Conflict): another writer?")]
    Conflict(String),
    #[error("cannot write {0}: {1}")]
    Api(String, kube::Error),
}

impl WriteError {
    pub fn reason(&self) -> &'static str {
        match self {
            WriteError::NotLeader(_) => "not_leader",
            WriteError::Conflict(_) => "conflict",
            WriteError::Api(..) => "error",
        }
    }
}

/// Writes the shards, each a create or a replace conditional on the resourceVersion this
/// writer last saw, checking the Lease before each one.
pub struct Writer {
    pub api: Api<ConfigMap>,
    /// ConfigMap name → resourceVersion last seen (from the watch or our own writes).
    pub versions: BTreeMap<String, String>,
    pub calls: u64,
}

impl Writer {
    /// Write `shards` as `<prefix>-0..n`; shards beyond n that exist get an empty
    /// checkpoint (a reader unions all shards). Returns the bytes written.
    pub async fn write(
        &mut self,
        shards: &[String],
        empty: &str,
        elector: &Elector,
    ) -> Result<usize, WriteError> {
        let mut names: Vec<String> = (0..shards.len())
            .map(|i| format!("{CHECKPOINT_PREFIX}-{i}"))
            .collect();
        let stale: Vec<String> = self
            .versions
            .keys()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect();
        names.extend(stale);
        let mut bytes = 0;
        for (i, name) in names.iter().enumerate() {
            if !elector.is_leader() {
                return Err(WriteError::NotLeader(name.clone()));
            }
            let text = shards.get(i).map_or(empty, String::as_str);
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some([(CHECKPOINT_LABEL.to_string(), "true".to_string())].into()),
                    resource_version: self.versions.get(name).cloned(),
                    ..ObjectMeta::default()
                },
                data: Some([(CHECKPOINT_KEY.to_string(), text.to_string())].into()),
                ..ConfigMap::default()
            };
            self.calls += 1;
            let result = if cm.metadata.resource_version.is_some() {
                self.api.replace(name, &PostParams::default(), &cm).await
            } else {
                self.api.create(&PostParams::default(), &cm).await
            };
            match result {
                Ok(written) => {
                    bytes += text.len();
                    if let Some(v) = written.metadata.resource_version {
                        self.versions.insert(name.clone(), v);
                    }
                }
                Err(e) if is_conflict(&e) => {
                    // Someone changed it since we read it. Learn its current version: a
                    // writer that still leads at the next checkpoint replaces it then.
                    self.calls += 1;
                    match self.api.get_opt(name).await {
                        Ok(Some(cm)) => {
                            if let Some(v) = cm.metadata.resource_version {
                                self.versions.insert(name.clone(), v);
                            }
                        }
                        _ => {
                            self.versions.remove(name);
                        }
                    }
                    return Err(WriteError::Conflict(name.clone()));
                }
                Err(e) => return Err(WriteError::Api(name.clone(), e)),
            }
        }
        Ok(bytes)
    }
}
