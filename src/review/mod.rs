//! `sidecar-sizer review`: the webhook's decisions for manifests not yet applied
//! (a pull request, `helm template`, `kustomize build`), from the webhook's own
//! [`pipeline::run`]. `manifests` reads them as kubectl does and edits their text
//! losslessly for `--write`; `formats` prints the review.

pub mod formats;
pub mod manifests;

pub use formats::{format_diff, format_json, format_markdown, format_table};

use crate::engine::constraints::ClusterSnapshot;
use crate::engine::patch::{
    self, DecisionRecord, ANN_CPU, ANN_CPU_LIMIT, ANN_DECISION, ANN_MEMORY, ANN_MEMORY_LIMIT,
};
use crate::engine::pipeline::{self, PodContext, Settings, Snapshots, Verdict};
use crate::engine::sizing::Resources;
use crate::engine::spec::SpecStore;
use crate::engine::workload::{self, WorkloadKind};
use crate::sources::history::UsageSnapshot;
use k8s_openapi::api::core::v1::Pod;
use manifests::{Editor, Node, Want};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One input: a file's path (or `-`) and its text.
pub struct Input {
    pub name: String,
    pub path: Option<PathBuf>,
    pub text: String,
}

pub struct Context<'a> {
    pub settings: &'a Settings,
    pub specs: &'a SpecStore,
    pub usage: &'a UsageSnapshot,
    /// Namespace of objects that carry none.
    pub namespace: &'a str,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sizes {
    pub cpu: String,
    pub memory: String,
    pub cpu_limit: String,
    pub memory_limit: String,
}

impl Sizes {
    fn of(req: Resources, lim: Resources) -> Sizes {
        Sizes {
            cpu: req.cpu.to_string(),
            memory: req.memory.to_string(),
            cpu_limit: lim.cpu.to_string(),
            memory_limit: lim.memory.to_string(),
        }
    }
}

/// The review of one pod template.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub file: String,
    /// 1-based line where the object's document starts.
    pub line: usize,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub workload: String,
    pub current: Sizes,
    pub proposed: Option<Sizes>,
    pub source: String,
    pub reasons: Vec<String>,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
    /// The manifest would change (pod template annotations / istio-proxy resources).
    pub changed: bool,
    /// The webhook would skip this pod (Istio will not inject it, `sidecar-sizer.io/skip`):
    /// why. Never written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

#[derive(Default)]
pub struct Outcome {
    pub items: Vec<Item>,
    /// Objects passed over (no pod template, other kinds), with why.
    pub notes: Vec<String>,
    /// Unreadable input: file and line.
    pub errors: Vec<String>,
    /// Inputs whose text changes: (input index, new text).
    pub rewritten: Vec<(usize, String)>,
}

/// Where the pod template of a kind lives, and the workload kind it stands for.
fn template_path(kind: &str) -> Option<(&'static [&'static str], WorkloadKind)> {
    Some(match kind {
        "Pod" => (&[], WorkloadKind::Pod),
        "Deployment" => (&["spec", "template"], WorkloadKind::Deployment),
        "StatefulSet" => (&["spec", "template"], WorkloadKind::StatefulSet),
        "DaemonSet" => (&["spec", "template"], WorkloadKind::DaemonSet),
        "ReplicaSet" => (&["spec", "template"], WorkloadKind::ReplicaSet),
        "Job" => (&["spec", "template"], WorkloadKind::Job),
        "CronJob" => (
            &["spec", "jobTemplate", "spec", "template"],
            WorkloadKind::CronJob,
        ),
        "Rollout" => (&["spec", "template"], WorkloadKind::Rollout),
        _ => return None,
    })
}

/// Review every input. Never stops at a bad document: errors are collected. With `write`,
/// `rewritten` holds the new text of every input that changes (text edits only: see
/// [`manifests`]); an input with nothing to change is not in it.
pub fn review(inputs: &[Input], ctx: &Context<'_>, write: bool) -> Outcome {
    let mut out = Outcome::default();
    for (idx, input) in inputs.iter().enumerate() {
        let (docs, seps) = manifests::split_docs(&input.text);
        let mut new_text = String::with_capacity(input.text.len() + 512);
        for (i, doc) in docs.iter().enumerate() {
            let mut piece = None;
            if !manifests::is_blank(doc.text) {
                match manifests::parse(doc.text) {
                    Ok(parsed) => {
                        let mut editor = Editor::new(doc.text, parsed.step);
                        for root in &parsed.roots {
                            review_object(root, &input.name, doc.line, ctx, &mut out, &mut editor);
                        }
                        if !editor.is_empty() {
                            piece = Some(editor.apply());
                        }
                    }
                    Err(e) => out.errors.push(format!(
                        "{}:{}: {}",
                        input.name,
                        doc.line + e.line.saturating_sub(1),
                        e.message
                    )),
                }
            }
            new_text.push_str(piece.as_deref().unwrap_or(doc.text));
            if let Some(sep) = seps.get(i) {
                new_text.push_str(sep);
            }
        }
        if write && new_text != input.text {
            out.rewritten.push((idx, new_text));
        }
    }
    out
}

/// Review one object (recursing into `List`s); record the text edits its pod template
/// needs in `editor`.
fn review_object(
    value: &Node,
    file: &str,
    line: usize,
    ctx: &Context<'_>,
    out: &mut Outcome,
    editor: &mut Editor<'_>,
) {
    let kind = value.str_at(&["kind"]).to_string();
    let name = value.str_at(&["metadata", "name"]).to_string();
    if kind == "List" || (kind.ends_with("List") && value.get("items").is_some()) {
        for item in value.get("items").map(Node::items).unwrap_or_default() {
            review_object(item, file, line, ctx, out, editor);
        }
        return;
    }
    let Some((path, wl_kind)) = template_path(&kind) else {
        let what = if kind.is_empty() {
            "object without kind".to_string()
        } else {
            format!("{kind} {name}")
        };
        out.notes
            .push(format!("{file}:{line}: skipped {what}: no pod template"));
        return;
    };
    let namespace = match value.str_at(&["metadata", "namespace"]) {
        "" => ctx.namespace.to_string(),
        ns => ns.to_string(),
    };
    // A template that is not a map (null, a string) cannot hold annotations: no template.
    let Some(template) = value.at(path).filter(|t| t.is_map()) else {
        out.notes.push(format!(
            "{file}:{line}: skipped {kind} {name}: no pod template"
        ));
        return;
    };
    // Only what the pipeline reads is decoded (YAML 1.1 view): nothing else can fail.
    let mut pod: Pod = match serde_json::from_value(manifests::pod_json(template)) {
        Ok(p) => p,
        Err(e) => {
            out.errors.push(format!(
                "{file}:{line}: {kind} {name}: pod template does not decode: {e}"
            ));
            return;
        }
    };
    pod.metadata.namespace = Some(namespace.clone());
    // The pod the webhook will receive carries its controller's ownerReference and labels:
    // give the template the same, so identity comes from the one function admission uses.
    workload::as_created_by(&mut pod.metadata, &wl_kind, &name);
    let (cur_req, cur_lim) = pipeline::current_size(&pod, &ctx.settings.policy);
    let cluster = ClusterSnapshot::default();
    let snaps = Snapshots {
        specs: ctx.specs,
        usage: ctx.usage,
        cluster: &cluster,
        mesh: None,
        hpas: None,
    };
    let pctx = PodContext {
        namespace: Some(&namespace),
    };
    let verdict = pipeline::run(&pod, &pctx, ctx.settings, &snaps);
    let mut item = Item {
        file: file.to_string(),
        line,
        kind: kind.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
        workload: String::new(),
        current: Sizes::of(cur_req, cur_lim),
        proposed: None,
        source: String::new(),
        reasons: Vec::new(),
        warnings: Vec::new(),
        notes: Vec::new(),
        changed: false,
        skipped: None,
    };
    let sized = match verdict {
        Verdict::Skip { reason } => {
            // Named as admission would name it, for the listing only.
            if let Ok(w) = workload::identify(&pod, Some(&namespace)) {
                item.workload = w.name;
            }
            item.skipped = Some(reason);
            out.items.push(item);
            return;
        }
        Verdict::NotSized {
            workload,
            error,
            decision,
            warnings,
        } => {
            if let Some(w) = workload {
                item.workload = w.name;
            }
            if let Some(d) = decision {
                item.source = d.source.as_str().to_string();
                item.reasons = d.reasons;
            }
            item.warnings = warnings;
            item.warnings
                .push(format!("sidecar-sizer: not sized: {error}"));
            out.items.push(item);
            return;
        }
        Verdict::Sized(s) => s,
    };
    let pipeline::Sized {
        workload,
        decision,
        planned,
        patched,
        warnings,
        ..
    } = *sized;
    item.workload = workload.name;
    item.source = decision.source.as_str().to_string();
    item.reasons = decision.reasons;
    item.warnings = warnings;
    item.proposed = Some(Sizes::of(planned.requests, planned.limits));
    let proxy = patch::find_proxy(&pod).ok().flatten().map(|(p, _)| p);
    let touches = |path: &str| {
        path.starts_with("/metadata/annotations")
            || proxy
                .as_deref()
                .is_some_and(|p| path.starts_with(&format!("{p}/resources")))
    };
    let mut changed = false;
    for op in &planned.ops {
        let path = match op {
            json_patch::PatchOperation::Add(a) => a.path.to_string(),
            _ => continue,
        };
        if touches(&path) {
            changed = true;
        } else if path.starts_with("/metadata/labels") {
            if let Some((k, v)) = &decision.inject {
                item.notes
                    .push(format!("spec enables injection: set label {k}=\"{v}\""));
            }
        }
    }
    item.changed = changed;
    if changed {
        if let Err(e) = edit_template(editor, template, &pod, &planned, &patched, proxy.as_deref())
        {
            out.errors
                .push(format!("{file}:{line}: {kind} {name}: cannot write: {e}"));
        }
    }
    out.items.push(item);
}

/// The text edits that give the manifest's pod template what the patch gives the pod: our
/// annotations (the decision recorded without its reasons, so refreshed wording never
/// changes a file) and, when the template has an istio-proxy container, its resources.
fn edit_template(
    editor: &mut Editor<'_>,
    template: &Node,
    pod: &Pod,
    planned: &patch::Planned,
    patched: &patch::Patched,
    proxy: Option<&str>,
) -> Result<(), String> {
    let mut annotations: Vec<(String, Want)> =
        [ANN_CPU, ANN_CPU_LIMIT, ANN_MEMORY, ANN_MEMORY_LIMIT]
            .iter()
            .filter_map(|k| {
                Some((
                    k.to_string(),
                    Want::Str(patched.annotations.get(*k)?.clone()),
                ))
            })
            .collect();
    let previous = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_DECISION))
        .and_then(|v| serde_json::from_str::<DecisionRecord>(v).ok());
    if !previous.is_some_and(|p| p.same_decision(&planned.record)) {
        let record = DecisionRecord {
            reasons: Vec::new(),
            ..planned.record.clone()
        };
        let text = serde_json::to_string(&record).map_err(|e| e.to_string())?;
        annotations.push((ANN_DECISION.to_string(), Want::Str(text)));
    }
    let wants = vec![(
        "metadata".to_string(),
        Want::Map(vec![("annotations".to_string(), Want::Map(annotations))]),
    )];
    editor.edit_map(template, &wants)?;
    // "/spec/containers/1" → the template's spec.containers[1]
    let Some(proxy) = proxy else { return Ok(()) };
    let mut parts = proxy.trim_start_matches("/spec/").split('/');
    let (Some(list), Some(idx)) = (
        parts.next(),
        parts.next().and_then(|i| i.parse::<usize>().ok()),
    ) else {
        return Ok(());
    };
    let container = template
        .get("spec")
        .and_then(|s| s.get(list))
        .and_then(|l| l.items().get(idx))
        .ok_or_else(|| format!("no container at {proxy}"))?;
    let section = |r: crate::engine::sizing::Resources| {
        Want::Map(vec![
            ("cpu".to_string(), Want::Qty(r.cpu.to_string())),
            ("memory".to_string(), Want::Qty(r.memory.to_string())),
        ])
    };
    let wants = vec![(
        "resources".to_string(),
        Want::Map(vec![
            ("requests".to_string(), section(planned.requests)),
            ("limits".to_string(), section(planned.limits)),
        ]),
    )];
    editor.edit_map(container, &wants)
}

/// Files to read: files as given, directories walked for *.yaml, *.yml, *.json.
pub fn expand_paths(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<String>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" || !p.is_dir() {
            files.push(p.clone());
            continue;
        }
        let mut stack = vec![p.clone()];
        let mut found = Vec::new();
        while let Some(dir) = stack.pop() {
            match std::fs::read_dir(&dir) {
                Ok(rd) => {
                    for e in rd.flatten() {
                        let path = e.path();
                        if path.is_dir() {
                            stack.push(path);
                        } else if matches!(
                            path.extension().and_then(|x| x.to_str()),
                            Some("yaml" | "yml" | "json")
                        ) {
                            found.push(path);
                        }
                    }
                }
                Err(e) => errors.push(format!("{}: cannot read directory: {e}", dir.display())),
            }
        }
        found.sort();
        files.extend(found);
    }
    (files, errors)
}

pub fn read_inputs(files: &[PathBuf]) -> (Vec<Input>, Vec<String>) {
    let mut inputs = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        if f.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
                Ok(_) => inputs.push(Input {
                    name: "<stdin>".into(),
                    path: None,
                    text,
                }),
                Err(e) => errors.push(format!("<stdin>: cannot read: {e}")),
            }
            continue;
        }
        match std::fs::read_to_string(f) {
            Ok(text) => inputs.push(Input {
                name: f.display().to_string(),
                path: Some(f.clone()),
                text,
            }),
            Err(e) => errors.push(format!("{}: cannot read: {e}", f.display())),
        }
    }
    (inputs, errors)
}

/// Write rewritten inputs back to their files (stdin cannot be written).
pub fn write_back(inputs: &[Input], outcome: &Outcome) -> Vec<String> {
    let mut errors = Vec::new();
    for (idx, text) in &outcome.rewritten {
        let Some(input) = inputs.get(*idx) else {
            continue;
        };
        match &input.path {
            Some(path) => {
                if let Err(e) = write_atomic(path, text) {
                    errors.push(format!("{}: cannot write: {e}", path.display()));
                }
            }
            None => errors.push("<stdin>: --write cannot write back to stdin".into()),
        }
    }
    errors
}

fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.sidecar-sizer.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Load specs and usage the way `serve` does, for a one-shot review. Messages go to `errors`.
pub async fn load_context(
    args: &crate::cli::ReviewArgs,
    errors: &mut Vec<String>,
) -> (SpecStore, UsageSnapshot) {
    crate::sources::oneshot::load(
        args.spec_dir.as_deref(),
        args.history.as_deref(),
        args.state_dir.as_deref(),
        &args.prometheus,
        errors,
    )
    .await
}

/// The whole `review` command; returns the exit code.
pub async fn run(args: &crate::cli::ReviewArgs, color: bool) -> u8 {
    use crate::cli::ReviewFormat;
    let mut errors = Vec::new();
    let policy = args.policy.to_policy();
    if let Err(e) = policy.validate() {
        eprintln!("error: invalid policy flags: {e}");
        return 1;
    }
    let (specs, usage) = load_context(args, &mut errors).await;
    let settings = Settings {
        policy,
        patch: crate::engine::patch::PatchOptions {
            override_explicit: args.override_explicit,
        },
        dry_run_everywhere: false,
    };
    let (files, walk_errors) = expand_paths(&args.paths);
    errors.extend(walk_errors);
    let (inputs, read_errors) = read_inputs(&files);
    errors.extend(read_errors);
    let ctx = Context {
        settings: &settings,
        specs: &specs,
        usage: &usage,
        namespace: &args.namespace,
    };
    // The diff needs the rewritten text even without --write.
    let outcome = review(
        &inputs,
        &ctx,
        args.write || args.format == ReviewFormat::Diff,
    );
    errors.extend(outcome.errors.iter().cloned());
    let text = match args.format {
        ReviewFormat::Table => format_table(&outcome, color),
        ReviewFormat::Markdown => format_markdown(&outcome),
        ReviewFormat::Json => format_json(&outcome),
        ReviewFormat::Diff => format_diff(&inputs, &outcome),
    };
    print!("{text}");
    if args.write {
        errors.extend(write_back(&inputs, &outcome));
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    let changed = outcome.items.iter().any(|i| i.changed);
    let warned = outcome.items.iter().any(|i| !i.warnings.is_empty());
    if !errors.is_empty() {
        1
    } else if args.fail_on_change && changed {
        2
    } else if args.fail_on_warning && warned {
        3
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_parts() -> (Settings, SpecStore, UsageSnapshot) {
        (
            Settings::default(),
            SpecStore::default(),
            UsageSnapshot::default(),
        )
    }

    fn run_on(text: &str) -> Outcome {
        let (settings, specs, usage) = ctx_parts();
        let ctx = Context {
            settings: &settings,
            specs: &specs,
            usage: &usage,
            namespace: "default",
        };
        review(
            &[Input {
                name: "x.yaml".into(),
                path: None,
                text: text.into(),
            }],
            &ctx,
            true,
        )
    }

    /// Found by `make fuzz`: a `template:` holding only a comment (null) was reported as
    /// changed, but nothing could be written into it, so --write never converged.
    #[test]
    fn null_template_is_no_template() {
        let text = "kind: Deployment\nmetadata:\n  name: cart\nspec:\n  template:\n    # nothing\n";
        let out = run_on(text);
        assert!(out.items.is_empty());
        assert!(out.rewritten.is_empty());
        assert!(out.notes[0].contains("no pod template"), "{:?}", out.notes);
    }

    #[test]
    fn yaml11_fields_never_fail_a_document() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: cart}\nspec:\n  template:\n    spec:\n      volumes:\n        - name: c\n          configMap: {name: c, defaultMode: 0644}\n      containers:\n        - name: app\n          env:\n            - {name: A, value: \"on\"}\n";
        let out = run_on(text);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.items.len(), 1);
        assert!(out.items[0].changed);
        let written = &out.rewritten[0].1;
        assert!(
            written.starts_with(&text[..text.len() - 1]) || written.contains("defaultMode: 0644"),
            "{written}"
        );
        // Written again: nothing to change, the decision has no reasons.
        let again = run_on(written);
        assert!(again.rewritten.is_empty(), "{:?}", again.rewritten);
        assert!(again.items.iter().all(|i| !i.changed));
        assert!(!written.contains("reasons"), "{written}");
    }

    /// Issue 11 §5: a decision recorded with other reasons (older wording, a history
    /// refresh) is the same decision: nothing to write, nothing to fail on.
    #[test]
    fn reasons_never_make_a_change() {
        let text = "kind: Pod\nmetadata:\n  name: a\n  annotations:\n    sidecar.istio.io/proxyCPU: \"100m\"\n    sidecar.istio.io/proxyCPULimit: \"2\"\n    sidecar.istio.io/proxyMemory: \"128Mi\"\n    sidecar.istio.io/proxyMemoryLimit: \"1Gi\"\n    sidecar-sizer.io/decision: '{\"source\":\"default\",\"cpu\":\"100m\",\"cpuLimit\":\"2\",\"memory\":\"128Mi\",\"memoryLimit\":\"1Gi\",\"reasons\":[\"older wording\"]}'\nspec:\n  containers: [{name: app}]\n";
        let out = run_on(text);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.items.len(), 1);
        assert!(!out.items[0].changed, "{:?}", out.items[0]);
        assert!(out.rewritten.is_empty());
    }

    #[test]
    fn skips_are_listed_and_never_written() {
        for text in [
            "kind: Deployment\nmetadata: {name: a}\nspec:\n  template:\n    spec:\n      hostNetwork: yes\n      containers: [{name: app}]\n",
            "kind: Deployment\nmetadata: {name: a}\nspec:\n  template:\n    metadata:\n      labels: {sidecar.istio.io/inject: \"off\"}\n    spec:\n      containers: [{name: app}]\n",
            "kind: Pod\nmetadata:\n  name: a\n  annotations: {sidecar-sizer.io/skip: \"True\"}\nspec:\n  containers: [{name: app}]\n",
        ] {
            let out = run_on(text);
            assert!(out.rewritten.is_empty(), "{text}");
            assert_eq!(out.items.len(), 1);
            assert!(out.items[0].skipped.is_some(), "{text}");
            assert_eq!(out.items[0].workload, "a");
        }
    }
}
