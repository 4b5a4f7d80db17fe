//! `sidecar-sizer review`: the webhook's decisions for manifests not yet applied
//! (a pull request, `helm template`, `kustomize build`), with the same decide() and patch.

use crate::engine::constraints::ClusterSnapshot;
use crate::engine::patch::{
    self, ANN_CPU, ANN_CPU_LIMIT, ANN_DECISION, ANN_MEMORY, ANN_MEMORY_LIMIT,
};
use crate::engine::pipeline::{self, PodContext, Settings, Snapshots, Verdict};
use crate::engine::sizing::Resources;
use crate::engine::spec::SpecStore;
use crate::engine::workload::{self, WorkloadKind};
use crate::sources::history::UsageSnapshot;
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;
use serde_yaml_ng::Value as Yaml;
use std::fmt::Write as _;
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

/// A document of a multi-document input: its text and first line.
struct Doc<'t> {
    text: &'t str,
    line: usize,
}

fn split_docs(text: &str) -> (Vec<Doc<'_>>, Vec<&str>) {
    // Separators are kept verbatim so a rewrite only touches changed documents.
    let mut docs = Vec::new();
    let mut seps = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") {
            docs.push(Doc {
                text: &text[start..offset],
                line: start_line,
            });
            seps.push(&text[offset..offset + line.len()]);
            start = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    docs.push(Doc {
        text: &text[start..],
        line: start_line,
    });
    (docs, seps)
}

/// The comment and blank lines a document starts with.
fn leading_comments(doc: &str) -> &str {
    let mut end = 0;
    for line in doc.split_inclusive('\n') {
        let t = line.trim();
        if !(t.is_empty() || t.starts_with('#')) {
            break;
        }
        end += line.len();
    }
    &doc[..end]
}

fn is_blank(doc: &str) -> bool {
    doc.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "..."
    })
}

fn get<'v>(v: &'v Yaml, path: &[&str]) -> Option<&'v Yaml> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn get_mut<'v>(v: &'v mut Yaml, path: &[&str]) -> Option<&'v mut Yaml> {
    path.iter().try_fold(v, |v, k| v.get_mut(*k))
}

fn text_at<'v>(v: &'v Yaml, path: &[&str]) -> &'v str {
    get(v, path).and_then(Yaml::as_str).unwrap_or("")
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

/// Review every input. Never stops at a bad document: errors are collected.
pub fn review(inputs: &[Input], ctx: &Context<'_>, write: bool) -> Outcome {
    let mut out = Outcome::default();
    for (idx, input) in inputs.iter().enumerate() {
        let (docs, seps) = split_docs(&input.text);
        let json_input = input.name.ends_with(".json");
        let mut new_docs: Vec<String> = Vec::with_capacity(docs.len());
        let mut file_changed = false;
        for doc in &docs {
            new_docs.push(doc.text.to_string());
            if is_blank(doc.text) {
                continue;
            }
            let mut value: Yaml = match serde_yaml_ng::from_str(doc.text) {
                Ok(v) => v,
                Err(e) => {
                    let line = e.location().map_or(doc.line, |l| doc.line + l.line() - 1);
                    let msg = e.to_string();
                    let msg = msg.split(" at line ").next().unwrap_or(&msg);
                    out.errors.push(format!("{}:{line}: {msg}", input.name));
                    continue;
                }
            };
            let changed = review_object(&mut value, &input.name, doc.line, ctx, &mut out);
            if changed && write {
                let text = if json_input {
                    serde_json::to_string_pretty(&value)
                        .map(|t| t + "\n")
                        .map_err(|e| e.to_string())
                } else {
                    serde_yaml_ng::to_string(&value).map_err(|e| e.to_string())
                };
                match text {
                    Ok(t) => {
                        if let Some(last) = new_docs.last_mut() {
                            // Keep the document's leading comments; the rest is re-emitted.
                            *last = format!("{}{t}", leading_comments(doc.text));
                        }
                        file_changed = true;
                    }
                    Err(e) => out
                        .errors
                        .push(format!("{}:{}: cannot re-emit: {e}", input.name, doc.line)),
                }
            }
        }
        if file_changed {
            let mut text = String::new();
            for (i, d) in new_docs.iter().enumerate() {
                text.push_str(d);
                if let Some(sep) = seps.get(i) {
                    if !text.is_empty() && !text.ends_with('\n') {
                        text.push('\n');
                    }
                    text.push_str(sep);
                }
            }
            out.rewritten.push((idx, text));
        }
    }
    out
}

/// Review one object (recursing into `List`s). Returns whether `value` was changed.
fn review_object(
    value: &mut Yaml,
    file: &str,
    line: usize,
    ctx: &Context<'_>,
    out: &mut Outcome,
) -> bool {
    let kind = text_at(value, &["kind"]).to_string();
    let name = text_at(value, &["metadata", "name"]).to_string();
    if kind == "List" || (kind.ends_with("List") && value.get("items").is_some()) {
        let mut changed = false;
        if let Some(Yaml::Sequence(items)) = value.get_mut("items") {
            for item in items.iter_mut() {
                changed |= review_object(item, file, line, ctx, out);
            }
        }
        return changed;
    }
    let Some((path, wl_kind)) = template_path(&kind) else {
        let what = if kind.is_empty() {
            "object without kind".to_string()
        } else {
            format!("{kind} {name}")
        };
        out.notes
            .push(format!("{file}:{line}: skipped {what}: no pod template"));
        return false;
    };
    let namespace = match text_at(value, &["metadata", "namespace"]) {
        "" => ctx.namespace.to_string(),
        ns => ns.to_string(),
    };
    // A template that is not a map (null, a string) cannot hold annotations: no template.
    let Some(template) = get(value, path).filter(|t| t.is_mapping()) else {
        out.notes.push(format!(
            "{file}:{line}: skipped {kind} {name}: no pod template"
        ));
        return false;
    };
    let pod_json = serde_json::json!({
        "metadata": serde_json::to_value(template.get("metadata")).unwrap_or_default(),
        "spec": serde_json::to_value(template.get("spec")).unwrap_or_default(),
    });
    let mut pod: Pod = match serde_json::from_value(pod_json) {
        Ok(p) => p,
        Err(e) => {
            out.errors.push(format!(
                "{file}:{line}: {kind} {name}: pod template does not decode: {e}"
            ));
            return false;
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
            item.skipped = Some(reason);
            out.items.push(item);
            return false;
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
            return false;
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
            item.notes
                .push("spec enables injection: set label sidecar.istio.io/inject=\"true\"".into());
        }
    }
    item.changed = changed;
    out.items.push(item);
    if !changed {
        return false;
    }
    apply_to_template(value, path, &patched, proxy.as_deref());
    true
}

/// Copy what the patch set (our annotations, the istio-proxy's resources) into the
/// manifest's pod template, keeping everything else as it is.
fn apply_to_template(
    value: &mut Yaml,
    path: &[&str],
    patched: &patch::Patched,
    proxy: Option<&str>,
) {
    let Some(template) = get_mut(value, path) else {
        return;
    };
    let Some(t) = template.as_mapping_mut() else {
        return;
    };
    let meta = t
        .entry(Yaml::from("metadata"))
        .or_insert_with(|| Yaml::Mapping(Default::default()));
    if !meta.is_mapping() {
        *meta = Yaml::Mapping(Default::default());
    }
    if let Some(m) = meta.as_mapping_mut() {
        let ann = m
            .entry(Yaml::from("annotations"))
            .or_insert_with(|| Yaml::Mapping(Default::default()));
        if !ann.is_mapping() {
            *ann = Yaml::Mapping(Default::default());
        }
        if let Some(a) = ann.as_mapping_mut() {
            let src = &patched.annotations;
            for key in [
                ANN_CPU,
                ANN_CPU_LIMIT,
                ANN_MEMORY,
                ANN_MEMORY_LIMIT,
                ANN_DECISION,
            ] {
                if let Some(v) = src.get(key) {
                    a.insert(Yaml::from(key), Yaml::from(v.as_str()));
                }
            }
        }
    }
    // "/spec/containers/1" → spec.containers[1].resources
    let Some(proxy) = proxy else { return };
    let parts: Vec<&str> = proxy.trim_start_matches('/').split('/').collect();
    let (Some(list), Some(idx)) = (
        parts.get(1),
        parts.get(2).and_then(|i| i.parse::<usize>().ok()),
    ) else {
        return;
    };
    let resources = patched
        .proxy
        .as_ref()
        .and_then(|(_, c)| c.resources.as_ref())
        .and_then(|r| serde_yaml_ng::to_value(r).ok());
    let container = t
        .get_mut("spec")
        .and_then(|s| s.get_mut(*list))
        .and_then(|l| l.get_mut(idx))
        .and_then(Yaml::as_mapping_mut);
    if let (Some(c), Some(r)) = (container, resources) {
        c.insert(Yaml::from("resources"), r);
    }
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

// ---- output formats ----------------------------------------------------------------------

fn arrow(cur: &str, new: Option<&str>) -> String {
    match new {
        Some(n) if n != cur => format!("{cur}→{n}"),
        _ => cur.to_string(),
    }
}

fn cells(i: &Item) -> [String; 4] {
    let p = i.proposed.as_ref();
    [
        arrow(&i.current.cpu, p.map(|p| p.cpu.as_str())),
        arrow(&i.current.cpu_limit, p.map(|p| p.cpu_limit.as_str())),
        arrow(&i.current.memory, p.map(|p| p.memory.as_str())),
        arrow(&i.current.memory_limit, p.map(|p| p.memory_limit.as_str())),
    ]
}

fn workload_label(i: &Item) -> String {
    format!("{}/{} {}", i.namespace, i.workload, i.kind)
}

pub fn format_table(o: &Outcome, color: bool) -> String {
    let (yellow, dim, reset) = if color {
        ("\x1b[33m", "\x1b[2m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    let header = [
        "WORKLOAD",
        "SOURCE",
        "CPU",
        "CPU LIMIT",
        "MEMORY",
        "MEMORY LIMIT",
        "CHANGE",
        "WARNINGS",
    ];
    let mut rows: Vec<[String; 8]> = vec![header.map(String::from)];
    for i in &o.items {
        let [c, cl, m, ml] = cells(i);
        rows.push([
            workload_label(i),
            i.source.clone(),
            c,
            cl,
            m,
            ml,
            if i.changed { "yes".into() } else { "no".into() },
            i.warnings.len().to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (n, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell}{}", " ".repeat(w - cell.chars().count())))
            .collect();
        let line = line.join("  ");
        let paint = n > 0 && o.items.get(n - 1).is_some_and(|i| i.changed);
        let _ = if paint {
            writeln!(out, "{yellow}{}{reset}", line.trim_end())
        } else {
            writeln!(out, "{}", line.trim_end())
        };
    }
    for i in &o.items {
        for w in i.warnings.iter().chain(&i.notes) {
            let _ = writeln!(
                out,
                "{dim}{}:{}: {}: {w}{reset}",
                i.file,
                i.line,
                workload_label(i)
            );
        }
    }
    for n in &o.notes {
        let _ = writeln!(out, "{dim}{n}{reset}");
    }
    out
}

pub fn format_markdown(o: &Outcome) -> String {
    let changed = o.items.iter().filter(|i| i.changed).count();
    let mut out = String::new();
    let _ = writeln!(out, "### sidecar-sizer review\n");
    let _ = writeln!(
        out,
        "{} workload(s) reviewed, {changed} with proposed changes to istio-proxy sizing.\n",
        o.items.len()
    );
    let _ = writeln!(
        out,
        "| Workload | Requests (cpu / memory) | Limits (cpu / memory) | Source | Warnings |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for i in &o.items {
        let [c, cl, m, ml] = cells(i);
        let warnings = if i.warnings.is_empty() {
            "—".to_string()
        } else {
            i.warnings
                .iter()
                .map(|w| w.trim_start_matches("sidecar-sizer: ").replace('|', "\\|"))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let mark = if i.changed { " ✎" } else { "" };
        let _ = writeln!(
            out,
            "| `{}/{}` {}{mark} | {c} / {m} | {cl} / {ml} | {} | {warnings} |",
            i.namespace, i.workload, i.kind, i.source
        );
    }
    if !o.notes.is_empty() {
        let _ = writeln!(
            out,
            "\n<details><summary>{} object(s) passed over</summary>\n",
            o.notes.len()
        );
        for n in &o.notes {
            let _ = writeln!(out, "- {n}");
        }
        let _ = writeln!(out, "\n</details>");
    }
    out
}

pub fn format_json(o: &Outcome) -> String {
    serde_json::to_string_pretty(&o.items).unwrap_or_else(|_| "[]".into()) + "\n"
}

pub fn format_diff(inputs: &[Input], o: &Outcome) -> String {
    let mut out = String::new();
    for (idx, new) in &o.rewritten {
        let Some(input) = inputs.get(*idx) else {
            continue;
        };
        let diff = similar::TextDiff::from_lines(input.text.as_str(), new.as_str());
        let _ = write!(
            out,
            "{}",
            diff.unified_diff()
                .context_radius(3)
                .header(&format!("a/{}", input.name), &format!("b/{}", input.name))
        );
    }
    out
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

    #[test]
    fn splits_documents_with_lines() {
        let text = "a: 1\n---\nb: 2\n--- # comment\n\nc: 3\n";
        let (docs, seps) = split_docs(text);
        assert_eq!(docs.len(), 3);
        assert_eq!((docs[0].text, docs[0].line), ("a: 1\n", 1));
        assert_eq!((docs[1].text, docs[1].line), ("b: 2\n", 3));
        assert_eq!((docs[2].text, docs[2].line), ("\nc: 3\n", 5));
        assert_eq!(seps, vec!["---\n", "--- # comment\n"]);
        assert!(is_blank("# only\n\n...\n"));
    }

    /// Found by `make fuzz`: a `template:` holding only a comment (null) was reported as
    /// changed, but nothing could be written into it, so --write never converged.
    #[test]
    fn null_template_is_no_template() {
        let (settings, specs, usage) = (
            Settings::default(),
            SpecStore::default(),
            UsageSnapshot::default(),
        );
        let ctx = Context {
            settings: &settings,
            specs: &specs,
            usage: &usage,
            namespace: "default",
        };
        let text = "kind: Deployment\nmetadata:\n  name: cart\nspec:\n  template:\n    # nothing\n";
        let out = review(
            &[Input {
                name: "x.yaml".into(),
                path: None,
                text: text.into(),
            }],
            &ctx,
            true,
        );
        assert!(out.items.is_empty());
        assert!(out.rewritten.is_empty());
        assert!(out.notes[0].contains("no pod template"), "{:?}", out.notes);
    }
}
