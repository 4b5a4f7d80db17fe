//! `review --format table|markdown|json|diff`. Skipped workloads (the webhook would not
//! touch their pods) are listed with the reason in every format.

use super::{Input, Item, Outcome};
use std::fmt::Write as _;

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
    let name = if i.workload.is_empty() {
        &i.name
    } else {
        &i.workload
    };
    format!("{}/{name} {}", i.namespace, i.kind)
}

fn change(i: &Item) -> &'static str {
    match (&i.skipped, i.changed) {
        (Some(_), _) => "skipped",
        (None, true) => "yes",
        (None, false) => "no",
    }
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
            if i.source.is_empty() {
                "-".into()
            } else {
                i.source.clone()
            },
            c,
            cl,
            m,
            ml,
            change(i).into(),
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
        let skipped = i.skipped.iter().map(|r| format!("skipped: {r}"));
        for w in skipped
            .chain(i.warnings.iter().cloned())
            .chain(i.notes.iter().cloned())
        {
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

fn md(text: &str) -> String {
    text.trim_start_matches("sidecar-sizer: ")
        .replace('|', "\\|")
}

pub fn format_markdown(o: &Outcome) -> String {
    let changed = o.items.iter().filter(|i| i.changed).count();
    let skipped = o.items.iter().filter(|i| i.skipped.is_some()).count();
    let mut out = String::new();
    let _ = writeln!(out, "### sidecar-sizer review\n");
    let skipped_text = if skipped > 0 {
        format!(", {skipped} skipped (the webhook leaves their pods alone)")
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{} workload(s) reviewed, {changed} with proposed changes to istio-proxy sizing{skipped_text}.\n",
        o.items.len()
    );
    let _ = writeln!(
        out,
        "| Workload | Requests (cpu / memory) | Limits (cpu / memory) | Source | Warnings |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for i in &o.items {
        let [c, cl, m, ml] = cells(i);
        let mut notes: Vec<String> = i
            .skipped
            .iter()
            .map(|r| format!("skipped: {}", md(r)))
            .collect();
        notes.extend(i.warnings.iter().map(|w| md(w)));
        let warnings = if notes.is_empty() {
            "—".to_string()
        } else {
            notes.join("<br>")
        };
        let mark = if i.changed { " ✎" } else { "" };
        let source = if i.skipped.is_some() {
            "skipped"
        } else {
            &i.source
        };
        let name = if i.workload.is_empty() {
            &i.name
        } else {
            &i.workload
        };
        let _ = writeln!(
            out,
            "| `{}/{name}` {}{mark} | {c} / {m} | {cl} / {ml} | {source} | {warnings} |",
            i.namespace, i.kind
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

/// Unified diffs of the files `--write` would change. Skipped workloads are listed first as
/// `#` lines, which `patch` and `git apply` pass over as commentary.
pub fn format_diff(inputs: &[Input], o: &Outcome) -> String {
    let mut out = String::new();
    for i in o.items.iter().filter(|i| i.skipped.is_some()) {
        let _ = writeln!(
            out,
            "# {}:{}: {}: skipped: {}",
            i.file,
            i.line,
            workload_label(i),
            i.skipped.as_deref().unwrap_or("")
        );
    }
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
