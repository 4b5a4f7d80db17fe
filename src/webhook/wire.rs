//! AdmissionReview in → AdmissionReview out (DESIGN §3–§4, §9). No IO here: the caller
//! hands in the current spec and usage snapshots.
//!
//! Requests are decoded into a lean borrowed view ([`view`]): the review's head and, of the
//! pod, only what the pipeline reads; the rest of the pod (env, volumes, probes, ...) is
//! skipped by the parser, not built. A body the view cannot decode (or whose object is not
//! a v1 Pod) takes the typed path — kube-core's `AdmissionReview<Pod>` — which gives the
//! answer it always gave, with the position of the decode error. The response is written by
//! a small serializer of our own so that `patch` is base64 (`[]byte` in the Kubernetes
//! API), not the array of numbers kube-core emits (kube-rs #1781); both are accepted by the
//! apiserver and the golden test pins what we send.

use crate::engine::patch::Planned;
pub use crate::engine::pipeline::Settings;
use crate::engine::pipeline::{self, current_size, PodContext, Snapshots, Verdict};
use crate::engine::sizing::{Decision, FindingKind, Policy, Resources, Sources};
use crate::engine::workload::Workload;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::ByteString;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::BTreeMap;

const MAX_WARNING_CHARS: usize = 120;

/// Enforce: patch the pod. DryRun: explain only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Enforce,
    DryRun,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::DryRun => "dry-run",
        }
    }
}

/// What happened to one review; feeds the log line and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A patch was returned.
    Patched,
    /// Sized, but the pod already had the decision: empty patch.
    Unchanged,
    /// Dry-run: warnings and audit annotations, no patch.
    Reviewed,
    /// A skip rule matched (not a pod CREATE, opted out, hostNetwork, ...).
    Skipped,
    /// Something stopped us from sizing: allowed, no patch, a warning.
    Error,
    /// Overloaded or out of time: allowed, no patch, a warning, no sizing done.
    Shed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::Unchanged => "unchanged",
            Outcome::Reviewed => "reviewed",
            Outcome::Skipped => "skipped",
            Outcome::Error => "error",
            Outcome::Shed => "shed",
        }
    }
}

/// What one review produced.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The AdmissionReview JSON to send back (HTTP 200).
    pub body: Vec<u8>,
    pub uid: String,
    pub mode: Mode,
    pub outcome: Outcome,
    pub source: Option<Sources>,
    pub workload: Option<Workload>,
    /// Why a pod that was not skipped was not sized (metric label of [`NotSized`]).
    pub not_sized: Option<&'static str>,
    /// Why we skipped or failed, for the log.
    pub detail: Option<String>,
    pub requests: Option<Resources>,
    pub limits: Option<Resources>,
    pub finding_kinds: Vec<FindingKind>,
}

/// A request body that is not an AdmissionReview v1: HTTP 400 with this line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<ByteString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// Clean a warning for kubectl: no control characters, at most 120 characters.
pub fn sanitize_warning(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if cleaned.chars().count() <= MAX_WARNING_CHARS {
        return cleaned;
    }
    let mut out: String = cleaned.chars().take(MAX_WARNING_CHARS - 1).collect();
    out.push('…');
    out
}

struct Builder {
    uid: String,
    mode: Mode,
    warnings: Vec<String>,
    audit: BTreeMap<String, String>,
    patch: Option<Vec<u8>>,
}

impl Builder {
    fn warn(&mut self, text: &str) {
        self.warnings.push(sanitize_warning(text));
    }

    fn finish(self, mut answer: Answer) -> Answer {
        let out = ReviewOut {
            api_version: "admission.k8s.io/v1",
            kind: "AdmissionReview",
            response: ResponseOut {
                uid: &self.uid,
                allowed: true,
                patch_type: self.patch.as_ref().map(|_| "JSONPatch"),
                patch: self.patch.map(ByteString),
                audit_annotations: self.audit,
                warnings: self.warnings,
            },
        };
        // Serializing strings and maps cannot fail; fall back to a minimal answer anyway.
        answer.body = serde_json::to_vec(&out).unwrap_or_else(|_| {
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{{"uid":{},"allowed":true}}}}"#,
                serde_json::Value::String(self.uid.clone())
            )
            .into_bytes()
        });
        answer.uid = self.uid;
        answer.mode = self.mode;
        answer
    }
}

fn blank_answer(mode: Mode, outcome: Outcome) -> Answer {
    Answer {
        body: Vec::new(),
        uid: String::new(),
        mode,
        outcome,
        source: None,
        workload: None,
        not_sized: None,
        detail: None,
        requests: None,
        limits: None,
        finding_kinds: Vec::new(),
    }
}

/// Handle one AdmissionReview body arriving on a path of `path_mode`.
pub fn review(
    body: &[u8],
    path_mode: Mode,
    settings: &Settings,
    snaps: &Snapshots<'_>,
) -> Result<Answer, BadRequest> {
    let mode0 = if settings.dry_run_everywhere {
        Mode::DryRun
    } else {
        path_mode
    };
    // Hot path: the lean view. What it cannot take goes the typed way, as before.
    if let Ok(v) = serde_json::from_slice::<view::ReviewView<'_>>(body) {
        if v.object_is_v1_pod() {
            check_types(&v.api_version, &v.kind)?;
            let req = v
                .request
                .ok_or_else(|| BadRequest("AdmissionReview has no request".into()))?;
            let head = Head {
                uid: req.uid.into_owned(),
                operation: req.operation,
                kind: req.kind,
                sub_resource: req.sub_resource.map(Cow::into_owned),
                namespace: req.namespace.map(Cow::into_owned),
            };
            let pod = req.object.map(view::PodView::pod);
            return Ok(answer_request(head, pod.as_ref(), mode0, settings, snaps));
        }
    }
    let req = match serde_json::from_slice::<AdmissionReview<Pod>>(body) {
        Ok(review) => {
            check_types(&review.types.api_version, &review.types.kind)?;
            let req: AdmissionRequest<Pod> = review
                .try_into()
                .map_err(|_| BadRequest("AdmissionReview has no request".into()))?;
            req
        }
        Err(typed_err) => return undecodable(body, &typed_err, mode0),
    };
    let head = Head {
        uid: req.uid,
        operation: req.operation,
        kind: req.kind,
        sub_resource: req.sub_resource,
        namespace: req.namespace,
    };
    Ok(answer_request(
        head,
        req.object.as_ref(),
        mode0,
        settings,
        snaps,
    ))
}

/// The pod of a review as the request path decodes it: through the lean view, rebuilt
/// into the minimal typed [`Pod`] (`None`: the review has no object). For benchmarks and
/// fuzzing; [`review`] does the same.
pub fn decode_pod(body: &[u8]) -> Result<Option<Pod>, serde_json::Error> {
    let v: view::ReviewView<'_> = serde_json::from_slice(body)?;
    Ok(v.request.and_then(|r| r.object).map(view::PodView::pod))
}

/// What the answer needs from the review besides the pod.
struct Head {
    uid: String,
    operation: Operation,
    kind: kube::core::GroupVersionKind,
    sub_resource: Option<String>,
    namespace: Option<String>,
}

fn answer_request(
    req: Head,
    pod: Option<&Pod>,
    mode0: Mode,
    settings: &Settings,
    snaps: &Snapshots<'_>,
) -> Answer {
    let mut b = Builder {
        uid: req.uid,
        mode: mode0,
        warnings: Vec::new(),
        audit: BTreeMap::new(),
        patch: None,
    };
    let skip = |b: Builder, why: String| {
        let mut a = blank_answer(b.mode, Outcome::Skipped);
        a.detail = Some(why);
        b.finish(a)
    };
    let is_pod = req.kind.kind == "Pod" && req.kind.group.is_empty();
    if req.operation != Operation::Create || !is_pod || req.sub_resource.is_some() {
        let what = format!(
            "{:?} of {}{}",
            req.operation,
            req.kind.kind,
            req.sub_resource
                .as_deref()
                .map(|s| format!("/{s}"))
                .unwrap_or_default()
        );
        return skip(b, format!("not a pod CREATE ({what})"));
    }
    let Some(pod) = pod else {
        b.warn("sidecar-sizer: review has no pod object; pod not sized");
        let mut a = blank_answer(b.mode, Outcome::Error);
        a.detail = Some("no object".into());
        return b.finish(a);
    };
    let ctx = PodContext {
        namespace: req.namespace.as_deref(),
    };
    match pipeline::run(pod, &ctx, settings, snaps) {
        Verdict::Skip { reason } => skip(b, reason),
        verdict => answer(pod, verdict, b, &settings.policy),
    }
}

/// Answer without sizing (overload, deadline): allowed, no patch, a warning. Only the uid
/// is read from the body; a body that is not an AdmissionReview is still a 400.
pub fn shed(body: &[u8], path_mode: Mode, why: &str) -> Result<Answer, BadRequest> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(rename = "apiVersion", borrow)]
        api_version: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        kind: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        request: Option<Req<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Req<'a> {
        #[serde(borrow)]
        uid: Option<std::borrow::Cow<'a, str>>,
    }
    let head: Head<'_> = serde_json::from_slice(body).map_err(|e| {
        BadRequest(format!(
            "body is not an AdmissionReview: {}",
            describe_decode_error(&e)
        ))
    })?;
    check_types(
        head.api_version.as_deref().unwrap_or(""),
        head.kind.as_deref().unwrap_or(""),
    )?;
    let uid = head
        .request
        .and_then(|r| r.uid)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| BadRequest("AdmissionReview request has no uid".into()))?;
    let mut b = Builder {
        uid: uid.into_owned(),
        mode: path_mode,
        warnings: Vec::new(),
        audit: BTreeMap::new(),
        patch: None,
    };
    b.warn(&format!("sidecar-sizer: pod not sized: {why}"));
    let mut a = blank_answer(path_mode, Outcome::Shed);
    a.detail = Some(why.to_string());
    Ok(b.finish(a))
}

fn check_types(api_version: &str, kind: &str) -> Result<(), BadRequest> {
    if api_version != "admission.k8s.io/v1" || kind != "AdmissionReview" {
        return Err(BadRequest(format!(
            "expected kind AdmissionReview apiVersion admission.k8s.io/v1, got kind {kind:?} apiVersion {api_version:?}"
        )));
    }
    Ok(())
}

/// The typed decode failed: is it an AdmissionReview at all (→ allowed with a warning)
/// or not (→ 400)?
fn undecodable(
    body: &[u8],
    typed_err: &serde_json::Error,
    mode: Mode,
) -> Result<Answer, BadRequest> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| BadRequest(format!("body is not JSON: {e}")))?;
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).unwrap_or("").to_string();
    check_types(&text(value.get("apiVersion")), &text(value.get("kind")))?;
    let request = value
        .get("request")
        .filter(|r| r.is_object())
        .ok_or_else(|| BadRequest("AdmissionReview has no request".into()))?;
    let uid = request
        .get("uid")
        .and_then(|u| u.as_str())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| BadRequest("AdmissionReview request has no uid".into()))?;
    let mut b = Builder {
        uid: uid.to_string(),
        mode,
        warnings: Vec::new(),
        audit: BTreeMap::new(),
        patch: None,
    };
    b.warn(&format!(
        "sidecar-sizer: pod not sized: {}",
        describe_decode_error(typed_err)
    ));
    let mut a = blank_answer(mode, Outcome::Error);
    a.detail = Some(describe_decode_error(typed_err));
    Ok(b.finish(a))
}

/// Where and what kind of decode error, without serde's message: it quotes the offending
/// value, which may be an env value or a secret, and must not reach warnings or logs.
fn describe_decode_error(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Data => "a field has the wrong type or value",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Eof => "truncated JSON",
        serde_json::error::Category::Io => "read error",
    };
    format!(
        "cannot decode the request as a pod review: {what} at line {} column {}",
        e.line(),
        e.column()
    )
}

/// The answer for a pod the pipeline did not skip.
fn answer(pod: &Pod, verdict: Verdict, mut b: Builder, policy: &Policy) -> Answer {
    let mut answer = blank_answer(b.mode, Outcome::Error);
    let s = match verdict {
        Verdict::Skip { reason } => {
            answer.outcome = Outcome::Skipped;
            answer.detail = Some(reason);
            return b.finish(answer);
        }
        Verdict::NotSized {
            workload,
            error,
            decision,
            warnings,
        } => {
            for w in &warnings {
                b.warn(w);
            }
            b.warn(&format!("sidecar-sizer: pod not sized: {error}"));
            answer.source = decision.as_ref().map(|d| d.source);
            answer.detail = Some(error.to_string());
            answer.not_sized = Some(error.metric_label());
            answer.finding_kinds.push(FindingKind::Unsizable);
            answer.workload = workload;
            return b.finish(answer);
        }
        Verdict::Sized(s) => s,
    };
    if s.dry_run {
        b.mode = Mode::DryRun;
    }
    answer.source = Some(s.decision.source);
    answer.finding_kinds = s.decision.findings.iter().map(|f| f.kind).collect();
    if s.warnings.iter().any(|w| w.contains(" invalid (")) {
        answer.finding_kinds.push(FindingKind::SpecError);
    }
    let planned = &s.planned;
    answer.requests = Some(planned.requests);
    answer.limits = Some(planned.limits);
    if !planned.explicit.is_empty() {
        answer.finding_kinds.push(FindingKind::ExplicitKept);
    }
    match b.mode {
        Mode::Enforce => {
            for w in &s.warnings {
                b.warn(w);
            }
            if planned.ops.is_empty() {
                answer.outcome = Outcome::Unchanged;
            } else {
                match serde_json::to_vec(&planned.ops) {
                    Ok(bytes) => {
                        b.patch = Some(bytes);
                        answer.outcome = Outcome::Patched;
                    }
                    Err(e) => {
                        b.warn(&format!(
                            "sidecar-sizer: pod not sized: cannot encode patch: {e}"
                        ));
                        answer.detail = Some(e.to_string());
                    }
                }
            }
        }
        Mode::DryRun => {
            for w in dry_run_summary(pod, &s.decision, planned, policy) {
                b.warn(&w);
            }
            for w in &s.warnings {
                b.warn(w);
            }
            if let Ok(json) = serde_json::to_string(&planned.record) {
                b.audit.insert("decision".into(), json);
            }
            answer.outcome = Outcome::Reviewed;
        }
    }
    answer.workload = Some(s.workload);
    b.finish(answer)
}

/// `sidecar-sizer dry-run: istio-proxy cpu 100m→285m (limit 2→1), memory 128Mi→96Mi
/// (limit 1Gi→96Mi); source history`, split in two when longer than 120 characters.
fn dry_run_summary(pod: &Pod, d: &Decision, planned: &Planned, policy: &Policy) -> Vec<String> {
    let (cur_req, cur_lim) = current_size(pod, policy);
    let arrow = |a: String, b: String| if a == b { a } else { format!("{a}→{b}") };
    let cpu = format!(
        "cpu {} (limit {})",
        arrow(cur_req.cpu.to_string(), planned.requests.cpu.to_string()),
        arrow(cur_lim.cpu.to_string(), planned.limits.cpu.to_string())
    );
    let mem = format!(
        "memory {} (limit {})",
        arrow(
            cur_req.memory.to_string(),
            planned.requests.memory.to_string()
        ),
        arrow(
            cur_lim.memory.to_string(),
            planned.limits.memory.to_string()
        )
    );
    let src = d.source.as_str();
    let one = format!("sidecar-sizer dry-run: istio-proxy {cpu}, {mem}; source {src}");
    if one.chars().count() <= MAX_WARNING_CHARS {
        return vec![one];
    }
    vec![
        format!("sidecar-sizer dry-run: istio-proxy {cpu}; source {src}"),
        format!("sidecar-sizer dry-run: istio-proxy {mem}; source {src}"),
    ]
}

/// The lean, borrowed view of an AdmissionReview the request path decodes: only what the
/// pipeline reads. Everything else (env, volumes, probes, status, managedFields, ...) is
/// skipped by the parser without being built. Field types and optionality follow
/// kube-core's `AdmissionRequest` and k8s-openapi's `Pod` (same JSON accepted), and
/// [`ReviewView::pod`] rebuilds the minimal typed [`Pod`] the pipeline takes, containers
/// in their positions so patch paths stay right.
mod view {
    use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use kube::core::admission::Operation;
    use kube::core::GroupVersionKind;
    use serde::de::IgnoredAny;
    use serde::Deserialize;
    use std::borrow::Cow;
    use std::collections::BTreeMap;

    /// `Option<Vec<T>>` where `null` and absent both mean empty (k8s-openapi's rule for
    /// required lists such as `spec.containers`).
    fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: serde::Deserializer<'de>,
        T: Default + Deserialize<'de>,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ReviewView<'a> {
        #[serde(borrow)]
        pub api_version: Cow<'a, str>,
        #[serde(borrow)]
        pub kind: Cow<'a, str>,
        #[serde(borrow)]
        pub request: Option<RequestView<'a>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct RequestView<'a> {
        #[serde(borrow)]
        pub uid: Cow<'a, str>,
        pub kind: GroupVersionKind,
        /// Required by the API (and by kube-core's type); not read.
        #[allow(dead_code)]
        resource: IgnoredAny,
        #[serde(default, borrow)]
        pub sub_resource: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        pub namespace: Option<Cow<'a, str>>,
        pub operation: Operation,
        /// Required by the API (and by kube-core's type); not read.
        #[allow(dead_code)]
        user_info: IgnoredAny,
        #[serde(default, borrow)]
        pub object: Option<PodView<'a>>,
        #[serde(default)]
        #[allow(dead_code)]
        dry_run: bool,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    pub struct PodView<'a> {
        /// k8s-openapi refuses an object whose apiVersion or kind is not v1 Pod.
        #[serde(default, borrow)]
        api_version: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        kind: Option<Cow<'a, str>>,
        #[serde(default, borrow, deserialize_with = "null_as_default")]
        metadata: MetaView<'a>,
        #[serde(default, borrow)]
        spec: Option<SpecView<'a>>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct MetaView<'a> {
        #[serde(default, borrow)]
        name: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        generate_name: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        namespace: Option<Cow<'a, str>>,
        #[serde(default)]
        labels: Option<BTreeMap<String, String>>,
        #[serde(default)]
        annotations: Option<BTreeMap<String, String>>,
        #[serde(default)]
        owner_references: Option<Vec<OwnerReference>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct SpecView<'a> {
        #[serde(default, borrow, deserialize_with = "null_as_default")]
        containers: Vec<ContainerView<'a>>,
        #[serde(default, borrow)]
        init_containers: Option<Vec<ContainerView<'a>>>,
        #[serde(default)]
        host_network: Option<bool>,
        #[serde(default)]
        resources: Option<ResourceRequirements>,
        /// RuntimeClass overhead: counted by ResourceQuota fitting.
        #[serde(default)]
        overhead: Option<BTreeMap<String, Quantity>>,
        /// Decides the Terminating / NotTerminating quota scopes.
        #[serde(default)]
        active_deadline_seconds: Option<i64>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ContainerView<'a> {
        #[serde(default, borrow)]
        name: Option<Cow<'a, str>>,
        #[serde(default)]
        resources: Option<ResourceRequirements>,
        #[serde(default, borrow)]
        restart_policy: Option<Cow<'a, str>>,
        /// Tells an owner's istio-proxy customisation (`auto` or none) from an injected proxy.
        #[serde(default, borrow)]
        image: Option<Cow<'a, str>>,
    }

    fn owned(s: Option<Cow<'_, str>>) -> Option<String> {
        s.map(Cow::into_owned)
    }

    impl ContainerView<'_> {
        fn container(self) -> Container {
            Container {
                name: self.name.map(Cow::into_owned).unwrap_or_default(),
                resources: self.resources,
                restart_policy: owned(self.restart_policy),
                image: owned(self.image),
                ..Container::default()
            }
        }
    }

    impl ReviewView<'_> {
        /// False when the object names another apiVersion or kind than v1 Pod (the
        /// typed decoder refuses it, and so answers it).
        pub fn object_is_v1_pod(&self) -> bool {
            let Some(o) = self.request.as_ref().and_then(|r| r.object.as_ref()) else {
                return true;
            };
            o.api_version.as_deref().is_none_or(|v| v == "v1")
                && o.kind.as_deref().is_none_or(|k| k == "Pod")
        }
    }

    impl PodView<'_> {
        /// The minimal typed pod: the fields above, everything else default.
        pub fn pod(self) -> Pod {
            let m = self.metadata;
            Pod {
                metadata: ObjectMeta {
                    name: owned(m.name),
                    generate_name: owned(m.generate_name),
                    namespace: owned(m.namespace),
                    labels: m.labels,
                    annotations: m.annotations,
                    owner_references: m.owner_references,
                    ..ObjectMeta::default()
                },
                spec: self.spec.map(|s| PodSpec {
                    containers: s
                        .containers
                        .into_iter()
                        .map(ContainerView::container)
                        .collect(),
                    init_containers: s
                        .init_containers
                        .map(|v| v.into_iter().map(ContainerView::container).collect()),
                    host_network: s.host_network,
                    resources: s.resources,
                    overhead: s.overhead,
                    active_deadline_seconds: s.active_deadline_seconds,
                    ..PodSpec::default()
                }),
                status: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_clean_and_short() {
        assert_eq!(sanitize_warning("a\nb\tc"), "a b c");
        let long = "x".repeat(300);
        let w = sanitize_warning(&long);
        assert_eq!(w.chars().count(), 120);
        let uni = "é".repeat(200);
        assert_eq!(sanitize_warning(&uni).chars().count(), 120);
    }

    fn run(body: &str) -> Result<Answer, BadRequest> {
        review(
            body.as_bytes(),
            Mode::Enforce,
            &Settings::default(),
            &Snapshots {
                specs: &Default::default(),
                usage: &Default::default(),
                cluster: &Default::default(),
                mesh: None,
                hpas: None,
            },
        )
    }

    #[test]
    fn bad_bodies_are_400() {
        assert!(run("not json").unwrap_err().0.contains("not JSON"));
        assert!(run("{}").unwrap_err().0.contains("AdmissionReview"));
        assert!(run(r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}"#)
            .unwrap_err()
            .0
            .contains("v1beta1"));
        assert!(
            run(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#)
                .unwrap_err()
                .0
                .contains("no request")
        );
        assert!(run(
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":1}}"#
        )
        .unwrap_err()
        .0
        .contains("uid"));
    }

    #[test]
    fn undecodable_pod_is_allowed_with_warning() {
        let body = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
            "uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},
            "resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE",
            "userInfo":{},"object":{"metadata":{"name":7},"spec":"nope"}}}"#;
        let a = run(body).unwrap();
        assert_eq!(a.outcome, Outcome::Error);
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["response"]["uid"], "u1");
        assert_eq!(v["response"]["allowed"], true);
        assert!(v["response"].get("patch").is_none());
        assert!(v["response"].get("patchType").is_none());
        let w = v["response"]["warnings"][0].as_str().unwrap();
        assert!(
            w.starts_with("sidecar-sizer: pod not sized: cannot decode"),
            "{w}"
        );
        assert!(w.chars().count() <= 120);
    }
}
