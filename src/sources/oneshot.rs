//! One-shot loads of the sources for the commands that run once (`review`, `report`).

use crate::cli::PrometheusArgs;
use crate::engine::spec::SpecStore;
use crate::engine::usage::UsageSnapshot;
use std::path::Path;

/// Load specs and usage the way `serve` does, once (`review`, `report`): the spec dir,
/// the history file overlaid by the store (unless older than --history-max-age) and by
/// Prometheus. Unreadable inputs are pushed to `errors`; the rest is still used.
pub async fn load(
    spec_dir: Option<&Path>,
    history: Option<&Path>,
    state_dir: Option<&Path>,
    prometheus: &PrometheusArgs,
    errors: &mut Vec<String>,
) -> (SpecStore, UsageSnapshot) {
    let specs = match spec_dir {
        Some(dir) => {
            let s = SpecStore::load_dir(dir, &SpecStore::default());
            for e in &s.errors {
                errors.push(format!("spec: {e}"));
            }
            s
        }
        None => SpecStore::default(),
    };
    let mut usage = UsageSnapshot::default();
    if let Some(file) = history {
        match crate::sources::history::load_history_file(file) {
            Ok((s, bad)) => {
                for e in bad {
                    errors.push(format!("{}: {e}", file.display()));
                }
                usage = s;
            }
            Err(e) => errors.push(e),
        }
    }
    if let Some(dir) = state_dir {
        match crate::sources::history::store::load(dir) {
            Ok(Some(s)) => {
                let max_age = prometheus.history_max_age.as_secs();
                if s.age_seconds(crate::sources::history::now_unix())
                    .is_some_and(|a| a > max_age)
                {
                    eprintln!(
                        "note: history store {} is older than --history-max-age; not used",
                        dir.display()
                    );
                } else {
                    usage = usage.overlaid(&s);
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    if let Some(cfg) = prometheus.to_config() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let fetched = match crate::sources::history::prometheus::client(&cfg) {
            Ok(client) => crate::sources::history::prometheus::fetch(
                &client,
                &cfg,
                crate::sources::history::now_unix(),
            )
            .await
            .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match fetched {
            Ok(f) => usage = usage.overlaid(&f.snapshot),
            Err(e) => errors.push(e),
        }
    }
    (specs, usage)
}
