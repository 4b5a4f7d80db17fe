//! The team spec (DESIGN §6): `SPEC_DIR/<namespace>/<workload>.yaml`.
//!
//! Only `deployment.istio` and `deployment.container.{replicas,resources}` are read; other
//! keys in a team's file (image, ports, ...) are ignored. Inside `deployment.istio` unknown
//! keys are errors, so a typo such as `resource:` is reported instead of silently ignored.

use crate::engine::quantity::{Cpu, Memory, GI};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Quantities above these are rejected as absurd for one container.
const MAX_CPU_MILLIS: u64 = 1_024_000;
const MAX_MEMORY_BYTES: u64 = 16 * 1024 * GI;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Spec {
    /// `deployment.istio.enabled`: `Some(true)` → injection label.
    pub inject: Option<bool>,
    /// `deployment.istio.resources`: the declared proxy requests.
    pub proxy_requests: Declared,
    /// `deployment.istio.limits`: explicit proxy limits.
    pub proxy_limits: Declared,
    /// `deployment.istio.pin`: use the declared size; history only advises.
    pub pin: bool,
    /// `deployment.istio.revision`: with `enabled: true`, label `istio.io/rev=<rev>` instead
    /// of `sidecar.istio.io/inject=true`.
    pub revision: Option<String>,
    /// `deployment.container.replicas`.
    pub replicas: Option<u32>,
    /// `deployment.container.resources`: the app container's declared requests.
    pub app_requests: Declared,
}

/// A cpu/memory pair where either may be absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Declared {
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
}

impl Declared {
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none()
    }
}

// ---- wire format -------------------------------------------------------------------------

#[derive(Deserialize)]
struct SpecFile {
    deployment: Option<DeploymentSection>,
}

#[derive(Deserialize)]
struct DeploymentSection {
    istio: Option<IstioSection>,
    container: Option<ContainerSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IstioSection {
    enabled: Option<bool>,
    resources: Option<IstioResources>,
    limits: Option<IstioResources>,
    #[serde(default)]
    pin: bool,
    revision: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IstioResources {
    cpu: Option<CpuField>,
    memory: Option<MemoryField>,
}

#[derive(Deserialize)]
struct ContainerSection {
    replicas: Option<u32>,
    resources: Option<AppResources>,
}

/// The app container's resources may carry other keys (ephemeral-storage, ...).
#[derive(Deserialize)]
struct AppResources {
    cpu: Option<CpuField>,
    memory: Option<MemoryField>,
}

/// Accept a quantity written as a YAML string or number (`cpu: 1`, `cpu: 0.5`, `cpu: 500m`).
struct QuantityText(String);

impl<'de> Deserialize<'de> for QuantityText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = QuantityText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Kubernetes quantity such as 500m, 0.5, 80Mi or 1Gi")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<QuantityText, E> {
                Ok(QuantityText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<QuantityText, E> {
                Ok(QuantityText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<QuantityText, E> {
                Ok(QuantityText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<QuantityText, E> {
                if !v.is_finite() {
                    return Err(E::custom(format!("quantity {v} is not a finite number")));
                }
                Ok(QuantityText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// serde_yaml_ng reports the path of the map holding a bad value, not the key: the
/// quantity fields prefix their message with this marker and `parse` turns
/// `a.b: <mark>cpu: ...` into `a.b.cpu: ...`.
const FIELD_MARK: &str = "field ";

struct CpuField(Cpu);
struct MemoryField(Memory);

impl<'de> Deserialize<'de> for CpuField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let QuantityText(text) = QuantityText::deserialize(d)?;
        let cpu = Cpu::parse(&text)
            .map_err(|e| e.to_string())
            .and_then(|c| check_range(&text, c.0, MAX_CPU_MILLIS).map(|_| c))
            .map_err(|e| de::Error::custom(format!("{FIELD_MARK}cpu: {e}")))?;
        Ok(CpuField(cpu))
    }
}

impl<'de> Deserialize<'de> for MemoryField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let QuantityText(text) = QuantityText::deserialize(d)?;
        let mem = Memory::parse(&text)
            .map_err(|e| e.to_string())
            .and_then(|m| check_range(&text, m.0, MAX_MEMORY_BYTES).map(|_| m))
            .map_err(|e| de::Error::custom(format!("{FIELD_MARK}memory: {e}")))?;
        Ok(MemoryField(mem))
    }
}

fn check_range(text: &str, value: u64, max: u64) -> Result<(), String> {
    if value == 0 {
        return Err(format!("quantity {text:?} must be greater than zero"));
    }
    if value > max {
        return Err(format!(
            "quantity {text:?} is absurdly large for one container"
        ));
    }
    Ok(())
}

fn declared(cpu: Option<CpuField>, memory: Option<MemoryField>) -> Declared {
    Declared {
        cpu: cpu.map(|c| c.0),
        memory: memory.map(|m| m.0),
    }
}

/// Parse and validate one spec document. The error names the field, the value and, for
/// syntax and type errors, the line and column.
pub fn parse(text: &str) -> Result<Spec, String> {
    let file: SpecFile = serde_yaml_ng::from_str(text)
        .map_err(|e| e.to_string().replacen(&format!(": {FIELD_MARK}"), ".", 1))?;
    let deployment = file
        .deployment
        .ok_or_else(|| "missing top-level key `deployment`".to_string())?;
    let mut spec = Spec::default();
    if let Some(istio) = deployment.istio {
        spec.inject = istio.enabled;
        spec.pin = istio.pin;
        spec.revision = istio.revision;
        if let Some(r) = istio.resources {
            spec.proxy_requests = declared(r.cpu, r.memory);
        }
        if let Some(l) = istio.limits {
            spec.proxy_limits = declared(l.cpu, l.memory);
        }
    }
    if let Some(c) = deployment.container {
        spec.replicas = c.replicas;
        if let Some(r) = c.resources {
            spec.app_requests = declared(r.cpu, r.memory);
        }
    }
    validate(&spec)?;
    Ok(spec)
}

fn validate(spec: &Spec) -> Result<(), String> {
    let (req, lim) = (&spec.proxy_requests, &spec.proxy_limits);
    if let (Some(r), Some(l)) = (req.cpu, lim.cpu) {
        if l < r {
            return Err(format!(
                "deployment.istio.limits.cpu: {l} is below deployment.istio.resources.cpu {r}"
            ));
        }
    }
    if let (Some(r), Some(l)) = (req.memory, lim.memory) {
        if l < r {
            return Err(format!(
                "deployment.istio.limits.memory: {l} is below deployment.istio.resources.memory {r}"
            ));
        }
    }
    if spec.pin && req.is_empty() {
        return Err(
            "deployment.istio.pin: true needs deployment.istio.resources (cpu and/or memory)"
                .to_string(),
        );
    }
    if let Some(rev) = &spec.revision {
        // A label value Istio's revision webhooks can select on (a DNS-1123 label, as
        // `istioctl` requires of revision names).
        let ok = !rev.is_empty()
            && rev.len() <= 63
            && rev
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !rev.starts_with('-')
            && !rev.ends_with('-');
        if !ok {
            return Err(format!(
                "deployment.istio.revision: {rev:?} is not a revision name (lower-case letters, digits and '-', at most 63)"
            ));
        }
        if spec.inject != Some(true) {
            return Err(format!(
                "deployment.istio.revision: {rev:?} needs deployment.istio.enabled: true"
            ));
        }
    }
    if spec.replicas == Some(0) {
        return Err("deployment.container.replicas: 0 must be at least 1".to_string());
    }
    Ok(())
}

/// One spec file as loaded, with the last good version kept when the file turns bad.
#[derive(Debug, Clone)]
pub struct SpecEntry {
    pub path: PathBuf,
    /// The spec in force: this file's current version, or its last good one.
    pub spec: Option<Arc<Spec>>,
    /// Why the file's current version was rejected.
    pub error: Option<String>,
    /// What identifies this version of the source (file mtime + size, ConfigMap
    /// resourceVersion): unchanged sources are not parsed again.
    pub(crate) stamp: Option<String>,
}

/// An error found while loading the spec directory, with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

/// All specs of a spec directory: namespace → workload → entry.
#[derive(Debug, Clone, Default)]
pub struct SpecStore {
    pub(crate) by_namespace: HashMap<String, HashMap<String, SpecEntry>>,
    /// Errors of the last load (bad files, unreadable directories).
    pub errors: Vec<SpecError>,
}

impl SpecStore {
    pub fn get(&self, namespace: &str, workload: &str) -> Option<&SpecEntry> {
        self.by_namespace.get(namespace)?.get(workload)
    }

    pub fn len(&self) -> usize {
        self.by_namespace.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `self` with every workload of `over` laid on top (whole entries replaced); the
    /// errors of both.
    pub fn overlaid(&self, over: &SpecStore) -> SpecStore {
        let mut out = self.clone();
        for (ns, m) in &over.by_namespace {
            let slot = out.by_namespace.entry(ns.clone()).or_default();
            for (wl, e) in m {
                slot.insert(wl.clone(), e.clone());
            }
        }
        out.errors.extend(over.errors.iter().cloned());
        out
    }

    /// Specs from ConfigMaps: each key `<workload>.yaml` (or `.yml`) of a ConfigMap in a
    /// namespace is that workload's spec. `(namespace, name, resourceVersion, data)` each.
    pub fn from_configmaps<'a>(
        configmaps: impl IntoIterator<
            Item = (
                &'a str,
                &'a str,
                &'a str,
                &'a std::collections::BTreeMap<String, String>,
            ),
        >,
        previous: &SpecStore,
    ) -> SpecStore {
        let mut store = SpecStore::default();
        let mut sorted: Vec<_> = configmaps.into_iter().collect();
        sorted.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (ns, name, version, data) in sorted {
            for (key, text) in data {
                let Some(workload) = key
                    .strip_suffix(".yaml")
                    .or_else(|| key.strip_suffix(".yml"))
                else {
                    continue;
                };
                let path = PathBuf::from(format!("configmap {ns}/{name} key {key}"));
                let slot = store.by_namespace.entry(ns.to_string()).or_default();
                if let Some(first) = slot.get(workload) {
                    store.errors.push(SpecError {
                        path: path.clone(),
                        message: format!("duplicate of {}; ignored", first.path.display()),
                    });
                    continue;
                }
                let prev = previous.get(ns, workload).filter(|p| p.path == path);
                let stamp = Some(version.to_string());
                let e = match prev {
                    Some(p) if !version.is_empty() && p.stamp == stamp => p.clone(),
                    _ => entry(path.clone(), parse(text), prev, stamp),
                };
                if let Some(msg) = &e.error {
                    store.errors.push(SpecError {
                        path,
                        message: msg.clone(),
                    });
                }
                slot.insert(workload.to_string(), e);
            }
        }
        store
    }
}

/// A new entry from a parse result, keeping `prev`'s spec when the new version is bad.
pub(crate) fn entry(
    path: PathBuf,
    result: Result<Spec, String>,
    prev: Option<&SpecEntry>,
    stamp: Option<String>,
) -> SpecEntry {
    match result {
        Ok(spec) => SpecEntry {
            path,
            spec: Some(Arc::new(spec)),
            error: None,
            stamp,
        },
        Err(message) => SpecEntry {
            path,
            spec: prev.and_then(|p| p.spec.clone()),
            error: Some(message),
            stamp,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::quantity::MI;

    const FULL: &str = r#"
deployment:
  image: shop/cart:1.2      # team keys we do not read
  istio:
    enabled: true
    resources:
      cpu: 500m
      memory: 80Mi
    limits:
      cpu: "2"
      memory: 256Mi
    pin: false
  container:
    replicas: 6
    resources:
      cpu: 1000m
      memory: 956Mi
      ephemeral-storage: 1Gi
"#;

    #[test]
    fn parses_the_seed_format() {
        let s = parse(FULL).unwrap();
        assert_eq!(s.inject, Some(true));
        assert_eq!(s.proxy_requests.cpu, Some(Cpu(500)));
        assert_eq!(s.proxy_requests.memory, Some(Memory(80 * MI)));
        assert_eq!(s.proxy_limits.cpu, Some(Cpu(2000)));
        assert_eq!(s.proxy_limits.memory, Some(Memory(256 * MI)));
        assert!(!s.pin);
        assert_eq!(s.replicas, Some(6));
        assert_eq!(s.app_requests.cpu, Some(Cpu(1000)));
        assert_eq!(s.app_requests.memory, Some(Memory(956 * MI)));
    }

    #[test]
    fn numbers_are_quantities() {
        let s = parse("deployment:\n  istio:\n    resources:\n      cpu: 0.5\n      memory: 1e3\n")
            .unwrap();
        assert_eq!(s.proxy_requests.cpu, Some(Cpu(500)));
        assert_eq!(s.proxy_requests.memory, Some(Memory(1000)));
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err()
    }

    #[test]
    fn errors_name_field_value_and_line() {
        let e = err("deployment:\n  istio:\n    resources:\n      cpu: lots\n");
        assert!(e.contains("deployment.istio.resources.cpu"), "{e}");
        assert!(e.contains("\"lots\""), "{e}");
        assert!(e.contains("line 4"), "{e}");
        let e = err("deployment:\n  istio:\n    resources:\n      memory: -1\n");
        assert!(e.contains("memory") && e.contains("negative"), "{e}");
        let e = err("deployment:\n  istio:\n    resources:\n      cpu: 0\n");
        assert!(e.contains("greater than zero"), "{e}");
        let e = err("deployment:\n  istio:\n    resources:\n      cpu: 1e30\n");
        assert!(e.contains("too large"), "{e}");
        let e = err("deployment:\n  istio:\n    resources:\n      cpu: 1e6\n");
        assert!(e.contains("absurd"), "{e}");
        let e = err("deployment:\n  istio:\n    resource:\n      cpu: 1\n");
        assert!(e.contains("unknown field `resource`"), "{e}");
        let e = err("deployment:\n  container:\n    replicas: many\n");
        assert!(e.contains("deployment.container.replicas"), "{e}");
        let e = err("deployment:\n  istio:\n    enabled: yes please\n");
        assert!(e.contains("deployment.istio.enabled"), "{e}");
        let e = err("deployment: [\n");
        assert!(e.contains("line"), "{e}");
        let e = err("other: 1\n");
        assert!(e.contains("deployment"), "{e}");
    }

    #[test]
    fn revision_field() {
        let s = parse("deployment:\n  istio:\n    enabled: true\n    revision: canary\n").unwrap();
        assert_eq!(s.revision.as_deref(), Some("canary"));
        let e = err("deployment:\n  istio:\n    enabled: true\n    revision: Canary_1\n");
        assert!(
            e.contains("deployment.istio.revision") && e.contains("Canary_1"),
            "{e}"
        );
        let e = err("deployment:\n  istio:\n    revision: canary\n");
        assert!(e.contains("needs deployment.istio.enabled: true"), "{e}");
    }

    #[test]
    fn cross_field_rules() {
        let e = err("deployment:\n  istio:\n    resources: {cpu: 500m}\n    limits: {cpu: 100m}\n");
        assert!(
            e.contains("deployment.istio.limits.cpu: 100m is below"),
            "{e}"
        );
        let e = err("deployment:\n  istio:\n    pin: true\n");
        assert!(e.contains("deployment.istio.pin"), "{e}");
        let e = err("deployment:\n  container:\n    replicas: 0\n");
        assert!(e.contains("replicas"), "{e}");
    }
}
