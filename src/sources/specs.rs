//! Team specs from a directory (DESIGN §6): `SPEC_DIR/<namespace>/<workload>.yaml`, read
//! in the background; unchanged files are not parsed again and a file that turns bad keeps
//! its last good version in force.

use crate::engine::spec::{entry, parse, Spec, SpecEntry, SpecError, SpecStore};
use std::path::{Path, PathBuf};

/// Largest spec file we read; a team spec is a few hundred bytes.
const MAX_SPEC_BYTES: u64 = 1024 * 1024;

impl SpecStore {
    /// Load `dir`, reusing unchanged files of `previous` and keeping the last good
    /// version of files that turned bad.
    pub fn load_dir(dir: &Path, previous: &SpecStore) -> SpecStore {
        let mut store = SpecStore::default();
        let namespaces = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                store.errors.push(SpecError {
                    path: dir.to_path_buf(),
                    message: format!("cannot read spec directory: {e}"),
                });
                return store;
            }
        };
        let mut ns_dirs: Vec<PathBuf> = Vec::new();
        for entry in namespaces.flatten() {
            let path = entry.path();
            if path.is_dir() {
                ns_dirs.push(path);
            } else if is_yaml(&path) {
                store.errors.push(SpecError {
                    path,
                    message: "spec files belong in SPEC_DIR/<namespace>/<workload>.yaml; ignored"
                        .to_string(),
                });
            }
        }
        ns_dirs.sort();
        for ns_dir in ns_dirs {
            let Some(namespace) = file_name(&ns_dir) else {
                continue;
            };
            if namespace.starts_with('.') {
                // Kubernetes ConfigMap volumes keep `..data` and timestamped dirs.
                continue;
            }
            let files = match std::fs::read_dir(&ns_dir) {
                Ok(rd) => rd,
                Err(e) => {
                    store.errors.push(SpecError {
                        path: ns_dir.clone(),
                        message: format!("cannot read directory: {e}"),
                    });
                    continue;
                }
            };
            let mut paths: Vec<PathBuf> = files
                .flatten()
                .map(|e| e.path())
                .filter(|p| is_yaml(p))
                .collect();
            // `.yaml` sorts before `.yml`, so `x.yaml` wins over `x.yml`.
            paths.sort();
            for path in paths {
                let Some(workload) = path.file_stem().and_then(|s| s.to_str()) else {
                    continue;
                };
                let workload = workload.to_string();
                let slot = store.by_namespace.entry(namespace.clone()).or_default();
                if let Some(first) = slot.get(&workload) {
                    store.errors.push(SpecError {
                        path: path.clone(),
                        message: format!("duplicate of {}; ignored", first.path.display()),
                    });
                    continue;
                }
                let prev = previous.get(&namespace, &workload);
                let entry = load_file(&path, prev);
                if let Some(msg) = &entry.error {
                    store.errors.push(SpecError {
                        path: path.clone(),
                        message: msg.clone(),
                    });
                }
                slot.insert(workload, entry);
            }
        }
        store
    }
}

fn load_file(path: &Path, prev: Option<&SpecEntry>) -> SpecEntry {
    let prev = prev.filter(|p| p.path == path);
    let stamp = std::fs::metadata(path)
        .ok()
        .and_then(|m| Some(format!("{:?}/{}", m.modified().ok()?, m.len())));
    if let Some(p) = prev {
        if stamp.is_some() && p.stamp == stamp {
            return p.clone();
        }
    }
    entry(path.to_path_buf(), read_spec_file(path), prev, stamp)
}

/// Read and parse one spec file; the error does not repeat the path.
pub fn read_spec_file(path: &Path) -> Result<Spec, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.len() > MAX_SPEC_BYTES {
        return Err(format!(
            "file is {} bytes, larger than the {MAX_SPEC_BYTES} bytes a spec may be",
            meta.len()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    parse(&text)
}

fn is_yaml(p: &Path) -> bool {
    p.is_file()
        && matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml")
        )
}

fn file_name(p: &Path) -> Option<String> {
    p.file_name()?.to_str().map(str::to_string)
}

/// `spec check`: validate files and directories (recursively), returning every error.
pub fn check_paths(paths: &[PathBuf]) -> (usize, Vec<SpecError>) {
    let mut checked = 0;
    let mut errors = Vec::new();
    let mut stack: Vec<PathBuf> = paths.iter().rev().cloned().collect();
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            match std::fs::read_dir(&path) {
                Ok(rd) => {
                    let mut children: Vec<PathBuf> = rd
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| {
                            p.is_dir() && !file_name(p).is_some_and(|n| n.starts_with('.'))
                                || is_yaml(p)
                        })
                        .collect();
                    children.sort();
                    stack.extend(children.into_iter().rev());
                }
                Err(e) => errors.push(SpecError {
                    path,
                    message: format!("cannot read directory: {e}"),
                }),
            }
            continue;
        }
        checked += 1;
        if let Err(message) = read_spec_file(&path) {
            errors.push(SpecError { path, message });
        }
    }
    (checked, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::quantity::Cpu;

    const FULL: &str = "deployment:\n  istio:\n    resources: {cpu: 500m, memory: 80Mi}\n";

    #[test]
    fn store_keeps_last_good_and_isolates_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let ns = dir.path().join("shop");
        std::fs::create_dir(&ns).unwrap();
        std::fs::write(ns.join("cart.yaml"), FULL).unwrap();
        std::fs::write(
            ns.join("web.yaml"),
            "deployment:\n  istio:\n    resources: {cpu: 200m}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("stray.yaml"), FULL).unwrap();
        let s1 = SpecStore::load_dir(dir.path(), &SpecStore::default());
        assert_eq!(s1.len(), 2);
        assert_eq!(s1.errors.len(), 1, "{:?}", s1.errors);
        assert!(s1.get("shop", "cart").unwrap().spec.is_some());

        // cart turns bad: its last good version stays, web is unaffected.
        std::fs::write(
            ns.join("cart.yaml"),
            "deployment:\n  istio:\n    resources:\n      cpu: x\n  # longer\n",
        )
        .unwrap();
        let s2 = SpecStore::load_dir(dir.path(), &s1);
        let cart = s2.get("shop", "cart").unwrap();
        assert_eq!(
            cart.spec.as_ref().unwrap().proxy_requests.cpu,
            Some(Cpu(500))
        );
        assert!(cart
            .error
            .as_ref()
            .unwrap()
            .contains("deployment.istio.resources.cpu"));
        assert!(s2.errors.iter().any(|e| e.path.ends_with("shop/cart.yaml")));
        assert_eq!(
            s2.get("shop", "web")
                .unwrap()
                .spec
                .as_ref()
                .unwrap()
                .proxy_requests
                .cpu,
            Some(Cpu(200))
        );

        // A new bad file with no good version has no spec, only an error.
        std::fs::write(ns.join("new.yaml"), "deployment: 3\n").unwrap();
        let s3 = SpecStore::load_dir(dir.path(), &s2);
        let new = s3.get("shop", "new").unwrap();
        assert!(new.spec.is_none() && new.error.is_some());

        // Missing directory: an error, no panic.
        let s4 = SpecStore::load_dir(&dir.path().join("nope"), &s3);
        assert!(s4.is_empty());
        assert_eq!(s4.errors.len(), 1);
    }
}
