//! Istio's own rules, as its injector applies them (DESIGN §4).
//!
//! Whether Istio injects a pod is decided in `injectRequired` of Istio's
//! `pkg/kube/inject/inject.go` (https://github.com/istio/istio/blob/master/pkg/kube/inject/inject.go):
//! - `hostNetwork: true` pods are never injected;
//! - the value of the **label** `sidecar.istio.io/inject` is used when the label is present
//!   (even when empty), else the value of the annotation of the same name;
//! - that value lower-cased is `y`, `yes`, `true` or `on` → inject; empty → the namespace's
//!   default policy; **any other value → do not inject** (`"False"`, `"no"`, `"off"`,
//!   `"disabled"`, a typo...).
//!
//! Revisions: Istio's per-revision webhooks select pods with label `istio.io/rev=<rev>`;
//! `sidecar.istio.io/inject=true` alone matches only the default revision's webhook.

use std::collections::BTreeMap;

pub const LABEL_INJECT: &str = "sidecar.istio.io/inject";
pub const LABEL_REV: &str = "istio.io/rev";
/// Set by Istio's injector on the pods it injected.
pub const ANN_STATUS: &str = "sidecar.istio.io/status";

/// Where an explicit injection choice was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Label,
    Annotation,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Label => "label",
            Origin::Annotation => "annotation",
        }
    }
}

/// What the pod says about injection, read as Istio reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injection {
    /// No label and no (or an empty) value: the namespace's policy decides. A pod in a
    /// namespace we are called for is taken as injected.
    Default,
    /// An explicit value that Istio reads as "inject".
    Inject { origin: Origin, value: String },
    /// An explicit value that Istio reads as "do not inject".
    OptOut { origin: Origin, value: String },
    /// `hostNetwork: true`: Istio never injects.
    HostNetwork,
}

impl Injection {
    /// Will Istio's injector add a proxy (as far as the pod can tell)?
    pub fn injects(&self) -> bool {
        matches!(self, Injection::Default | Injection::Inject { .. })
    }

    /// Why Istio will not inject, for logs, warnings and `review`.
    pub fn skip_reason(&self) -> Option<String> {
        match self {
            Injection::OptOut { origin, value } => Some(format!(
                "Istio will not inject: {} {LABEL_INJECT}={value:?}",
                origin.as_str()
            )),
            Injection::HostNetwork => Some("Istio will not inject: hostNetwork: true".into()),
            _ => None,
        }
    }
}

/// Istio's truth set for `sidecar.istio.io/inject` (YAML 1.1 booleans, lower-cased).
pub fn istio_true(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "y" | "yes" | "true" | "on"
    )
}

/// Read the pod's injection choice exactly as Istio's injector does.
pub fn injection(
    labels: Option<&BTreeMap<String, String>>,
    annotations: Option<&BTreeMap<String, String>>,
    host_network: bool,
) -> Injection {
    if host_network {
        return Injection::HostNetwork;
    }
    // The label wins whenever it is present, even with an empty value.
    let (origin, value) = match labels.and_then(|l| l.get(LABEL_INJECT)) {
        Some(v) => (Origin::Label, v),
        None => match annotations.and_then(|a| a.get(LABEL_INJECT)) {
            Some(v) => (Origin::Annotation, v),
            None => return Injection::Default,
        },
    };
    if value.is_empty() {
        Injection::Default
    } else if istio_true(value) {
        Injection::Inject {
            origin,
            value: value.clone(),
        }
    } else {
        Injection::OptOut {
            origin,
            value: value.clone(),
        }
    }
}

/// Our own boolean annotations (`sidecar-sizer.io/skip`): the usual case-insensitive
/// spellings. `None` for anything else (the caller warns and treats it as unset).
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "on" | "1" => Some(true),
        "false" | "no" | "n" | "off" | "0" | "" => Some(false),
        _ => None,
    }
}

/// The label that asks Istio to inject: `istio.io/rev=<rev>` for a revision, else
/// `sidecar.istio.io/inject=true`.
pub fn injection_label(revision: Option<&str>) -> (&'static str, String) {
    match revision {
        Some(rev) if !rev.is_empty() => (LABEL_REV, rev.to_string()),
        _ => (LABEL_INJECT, "true".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Every spelling, as a table: (label, annotation, Istio injects?). Expected values are
    /// written out from Istio's `injectRequired`, not computed.
    #[test]
    fn inject_rule_table() {
        let cases: &[(Option<&str>, Option<&str>, bool)] = &[
            (None, None, true),
            // Istio's truth set, any case
            (Some("true"), None, true),
            (Some("True"), None, true),
            (Some("TRUE"), None, true),
            (Some("y"), None, true),
            (Some("Y"), None, true),
            (Some("yes"), None, true),
            (Some("Yes"), None, true),
            (Some("on"), None, true),
            (Some("ON"), None, true),
            (None, Some("true"), true),
            (None, Some("Yes"), true),
            (None, Some("on"), true),
            // anything else that is not empty: no injection
            (Some("false"), None, false),
            (Some("False"), None, false),
            (Some("FALSE"), None, false),
            (Some("no"), None, false),
            (Some("n"), None, false),
            (Some("off"), None, false),
            (Some("0"), None, false),
            (Some("1"), None, false),
            (Some("enabled"), None, false),
            (Some("disabled"), None, false),
            (Some("ture"), None, false),
            (Some(" true"), None, false),
            (None, Some("false"), false),
            (None, Some("False"), false),
            (None, Some("no"), false),
            (None, Some("off"), false),
            (None, Some("nope"), false),
            // empty: namespace default
            (Some(""), None, true),
            (None, Some(""), true),
            // the label wins over the annotation, both ways
            (Some("true"), Some("false"), true),
            (Some("false"), Some("true"), false),
            (Some("False"), Some("yes"), false),
            (Some("on"), Some("off"), true),
            // an empty label still wins: the annotation is not read
            (Some(""), Some("false"), true),
        ];
        for (label, ann, want) in cases {
            let labels = label.map(|v| map(&[(LABEL_INJECT, v)]));
            let anns = ann.map(|v| map(&[(LABEL_INJECT, v)]));
            let got = injection(labels.as_ref(), anns.as_ref(), false);
            assert_eq!(
                got.injects(),
                *want,
                "label {label:?} annotation {ann:?} → {got:?}"
            );
            assert_eq!(got.skip_reason().is_some(), !want);
        }
    }

    #[test]
    fn host_network_is_never_injected() {
        let labels = map(&[(LABEL_INJECT, "true")]);
        let got = injection(Some(&labels), None, true);
        assert_eq!(got, Injection::HostNetwork);
        assert!(!got.injects());
        assert_eq!(
            got.skip_reason().unwrap(),
            "Istio will not inject: hostNetwork: true"
        );
    }

    #[test]
    fn opt_out_reason_names_origin_and_value() {
        let anns = map(&[(LABEL_INJECT, "Off")]);
        let got = injection(None, Some(&anns), false);
        assert_eq!(
            got.skip_reason().unwrap(),
            "Istio will not inject: annotation sidecar.istio.io/inject=\"Off\""
        );
    }

    #[test]
    fn our_booleans() {
        for t in ["true", "True", "TRUE", "yes", "Y", "on", "1", " true "] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["false", "False", "no", "N", "OFF", "0", ""] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for x in ["maybe", "ture", "2"] {
            assert_eq!(parse_bool(x), None, "{x}");
        }
    }

    #[test]
    fn revision_label() {
        assert_eq!(injection_label(None), (LABEL_INJECT, "true".into()));
        assert_eq!(injection_label(Some("")), (LABEL_INJECT, "true".into()));
        assert_eq!(
            injection_label(Some("canary")),
            (LABEL_REV, "canary".into())
        );
    }
}
