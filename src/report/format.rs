//! The report's formats: table, markdown, csv, json, html (README "report").

use super::{FindingOut, Report, Row, Sums, Values};
use crate::engine::quantity::{format_cpu, format_memory, GI, MI};
use serde_json::{json, Value};
use std::fmt::Write as _;

/// CSV columns, in order (README; scripts depend on them).
pub const CSV_COLUMNS: [&str; 14] = [
    "namespace",
    "kind",
    "name",
    "mode",
    "pods",
    "current_cpu_request_m",
    "current_memory_request_bytes",
    "current_cpu_limit_m",
    "current_memory_limit_bytes",
    "sized_cpu_request_m",
    "sized_memory_request_bytes",
    "sized_cpu_limit_m",
    "sized_memory_limit_bytes",
    "source",
];

fn four(v: &Values) -> Value {
    let [a, b, c, d] = v.quantities();
    json!({"cpuRequest": a, "memoryRequest": b, "cpuLimit": c, "memoryLimit": d})
}

fn sums(s: &Sums) -> Value {
    json!({
        "cpuRequestMillicores": s.cpu_request_millicores,
        "memoryRequestBytes": s.memory_request_bytes,
        "cpuLimitMillicores": s.cpu_limit_millicores,
        "memoryLimitBytes": s.memory_limit_bytes,
    })
}

fn finding(f: &FindingOut) -> Value {
    let mut v = json!({"kind": f.kind, "message": f.message});
    if let Some(h) = &f.hpa {
        v["hpa"] = json!(h.hpa);
        v["resource"] = json!(h.resource);
        v["targetUtilization"] = json!(h.target_utilization);
        v["before"] = json!(h.before);
        v["after"] = json!(h.after);
    }
    v
}

/// One JSON document (README "report JSON").
pub fn json(r: &Report) -> String {
    let workloads: Vec<Value> = r
        .workloads
        .iter()
        .map(|w| {
            json!({
                "namespace": w.namespace,
                "kind": w.kind,
                "name": w.name,
                "mode": w.mode,
                "pods": w.pods,
                "current": four(&w.current),
                "currentVaries": w.current_varies,
                "sized": w.sized.as_ref().map(four),
                "notSized": w.not_sized,
                "source": w.source,
                "reasons": w.reasons,
                "notes": w.notes,
                "findings": w.findings.iter().map(finding).collect::<Vec<_>>(),
            })
        })
        .collect();
    let namespaces: Vec<Value> = r
        .namespaces
        .iter()
        .map(|n| {
            json!({"name": n.name, "mode": n.mode, "pods": n.pods,
                   "current": sums(&n.current), "sized": sums(&n.sized)})
        })
        .collect();
    let doc = json!({
        "workloads": workloads,
        "totals": {"pods": r.pods, "current": sums(&r.current), "sized": sums(&r.sized)},
        "namespaces": namespaces,
        "unreadable": r.unreadable,
        "podsListed": r.pods_listed,
        "podsWithoutProxy": r.pods_without_proxy,
        "notes": r.notes,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// One row per workload, a header row, raw numbers; an empty cell is an absent value.
pub fn csv(r: &Report) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push_str("\r\n");
    for w in &r.workloads {
        let s = w.sized.unwrap_or_default();
        let cells = [
            csv_field(&w.namespace),
            csv_field(&w.kind),
            csv_field(&w.name),
            csv_field(&w.mode),
            w.pods.to_string(),
            opt(w.current.cpu_request),
            opt(w.current.memory_request),
            opt(w.current.cpu_limit),
            opt(w.current.memory_limit),
            opt(s.cpu_request),
            opt(s.memory_request),
            opt(s.cpu_limit),
            opt(s.memory_limit),
            csv_field(&w.source),
        ];
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// Memory for people: exact binary units when they fit, else Mi/Gi with one decimal.
fn human_memory(bytes: u64) -> String {
    if bytes == 0 || bytes % MI == 0 {
        return format_memory(bytes);
    }
    if bytes >= GI {
        format!("{:.1}Gi", bytes as f64 / GI as f64)
    } else {
        format!("{:.1}Mi", bytes as f64 / MI as f64)
    }
}

fn human_four(v: &Values) -> String {
    let c = |x: Option<u64>| x.map(format_cpu).unwrap_or_else(|| "-".into());
    let m = |x: Option<u64>| x.map(human_memory).unwrap_or_else(|| "-".into());
    format!(
        "{}/{} {}/{}",
        c(v.cpu_request),
        m(v.memory_request),
        c(v.cpu_limit),
        m(v.memory_limit)
    )
}

fn human_sums(s: &Sums) -> String {
    format!(
        "{}/{} {}/{}",
        format_cpu(s.cpu_request_millicores),
        human_memory(s.memory_request_bytes),
        format_cpu(s.cpu_limit_millicores),
        human_memory(s.memory_limit_bytes)
    )
}

fn signed_cpu(d: i128) -> String {
    let sign = if d < 0 { "-" } else { "+" };
    format!("{sign}{}", format_cpu(d.unsigned_abs() as u64))
}

fn signed_memory(d: i128) -> String {
    let sign = if d < 0 { "-" } else { "+" };
    format!("{sign}{}", human_memory(d.unsigned_abs() as u64))
}

fn cpu_change(n: &Sums, o: &Sums) -> i128 {
    o.cpu_request_millicores as i128 - n.cpu_request_millicores as i128
}

fn memory_change(n: &Sums, o: &Sums) -> i128 {
    o.memory_request_bytes as i128 - n.memory_request_bytes as i128
}

fn sized_text(w: &Row) -> String {
    match (&w.sized, &w.not_sized) {
        (Some(s), _) => human_four(s),
        (None, Some(why)) => format!("not sized: {why}"),
        (None, None) => "not sized".into(),
    }
}

fn findings_text(w: &Row) -> String {
    let mut kinds: Vec<&str> = w.findings.iter().map(|f| f.kind).collect();
    kinds.dedup();
    kinds.join(",")
}

fn current_text(w: &Row) -> String {
    let mut s = human_four(&w.current);
    if w.current_varies {
        s.push_str(" (varies)");
    }
    s
}

const HEAD: [&str; 9] = [
    "NAMESPACE",
    "KIND",
    "NAME",
    "MODE",
    "PODS",
    "CURRENT req/lim",
    "SIZED req/lim",
    "SOURCE",
    "FINDINGS",
];

fn row_cells(w: &Row) -> [String; 9] {
    [
        w.namespace.clone(),
        w.kind.clone(),
        w.name.clone(),
        w.mode.clone(),
        w.pods.to_string(),
        current_text(w),
        sized_text(w),
        w.source.clone(),
        findings_text(w),
    ]
}

fn aligned(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let pad = widths[i] - c.chars().count();
                let _ = write!(line, "{c}{}  ", " ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Aligned columns with human units: the workload table, then namespace and cluster totals.
pub fn table(r: &Report) -> String {
    let mut rows: Vec<Vec<String>> = vec![HEAD.iter().map(|s| s.to_string()).collect()];
    rows.extend(r.workloads.iter().map(|w| row_cells(w).to_vec()));
    let mut out = aligned(&rows);
    out.push('\n');
    let mut totals: Vec<Vec<String>> = vec![[
        "NAMESPACE",
        "MODE",
        "PODS",
        "CURRENT req/lim",
        "SIZED req/lim",
        "CPU REQ",
        "MEM REQ",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()];
    for n in &r.namespaces {
        totals.push(vec![
            n.name.clone(),
            n.mode.clone(),
            n.pods.to_string(),
            human_sums(&n.current),
            human_sums(&n.sized),
            signed_cpu(cpu_change(&n.current, &n.sized)),
            signed_memory(memory_change(&n.current, &n.sized)),
        ]);
    }
    totals.push(vec![
        "(cluster)".into(),
        String::new(),
        r.pods.to_string(),
        human_sums(&r.current),
        human_sums(&r.sized),
        signed_cpu(cpu_change(&r.current, &r.sized)),
        signed_memory(memory_change(&r.current, &r.sized)),
    ]);
    out.push_str(&aligned(&totals));
    let _ = writeln!(
        out,
        "\n{} pods listed, {} without istio-proxy",
        r.pods_listed, r.pods_without_proxy
    );
    if !r.unreadable.is_empty() {
        let _ = writeln!(out, "unreadable namespaces: {}", r.unreadable.join(", "));
    }
    for w in &r.workloads {
        for f in &w.findings {
            let _ = writeln!(out, "{}/{}: {}", w.namespace, w.name, f.message);
        }
        for n in &w.notes {
            let _ = writeln!(out, "{}/{}: note: {n}", w.namespace, w.name);
        }
    }
    out
}

fn md_cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

fn md_table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", head.join(" | "));
    let _ = writeln!(out, "|{}", " --- |".repeat(head.len()));
    for r in rows {
        let cells: Vec<String> = r.iter().map(|c| md_cell(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// Markdown: the workload table, then the namespace totals (with the cluster's).
pub fn markdown(r: &Report) -> String {
    let mut out = String::from("## istio-proxy sizing report\n\n### Workloads\n\n");
    let rows: Vec<Vec<String>> = r.workloads.iter().map(|w| row_cells(w).to_vec()).collect();
    let head = [
        "Namespace",
        "Kind",
        "Name",
        "Mode",
        "Pods",
        "Current req/lim",
        "Sized req/lim",
        "Source",
        "Findings",
    ];
    out.push_str(&md_table(&head, &rows));
    out.push_str("\n### Totals\n\n");
    let mut totals: Vec<Vec<String>> = r
        .namespaces
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.mode.clone(),
                n.pods.to_string(),
                human_sums(&n.current),
                human_sums(&n.sized),
            ]
        })
        .collect();
    totals.push(vec![
        "**cluster**".into(),
        String::new(),
        r.pods.to_string(),
        human_sums(&r.current),
        human_sums(&r.sized),
    ]);
    out.push_str(&md_table(
        &[
            "Namespace",
            "Mode",
            "Pods",
            "Current req/lim",
            "Sized req/lim",
        ],
        &totals,
    ));
    if !r.unreadable.is_empty() {
        let _ = writeln!(
            out,
            "\nUnreadable namespaces: {}",
            md_cell(&r.unreadable.join(", "))
        );
    }
    let findings: Vec<String> = r
        .workloads
        .iter()
        .flat_map(|w| {
            w.findings
                .iter()
                .map(move |f| format!("- `{}/{}`: {}", w.namespace, w.name, md_cell(&f.message)))
        })
        .collect();
    if !findings.is_empty() {
        out.push_str("\n### Findings\n\n");
        out.push_str(&findings.join("\n"));
        out.push('\n');
    }
    out
}

/// Escape text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Chart geometry: bars grow up (more) or down (less) from the middle line; the longest
/// bar of each resource is `BAR_MAX` px.
pub const BAR_MAX: f64 = 100.0;
const BAR_W: f64 = 18.0;
const GROUP_W: f64 = 70.0;

fn bar(class: &str, x: f64, change: i128, max: i128, title: &str) -> String {
    let h = if max == 0 {
        0.0
    } else {
        change.unsigned_abs() as f64 / max as f64 * BAR_MAX
    };
    let mid = BAR_MAX + 10.0;
    let y = if change >= 0 { mid - h } else { mid };
    format!(
        "<rect class=\"bar {class}\" data-change=\"{change}\" x=\"{x:.2}\" y=\"{y:.4}\" width=\"{BAR_W}\" height=\"{h:.4}\"><title>{}</title></rect>",
        esc(title)
    )
}

fn chart(r: &Report) -> String {
    let max_cpu = r
        .namespaces
        .iter()
        .map(|n| cpu_change(&n.current, &n.sized).abs())
        .max()
        .unwrap_or(0);
    let max_mem = r
        .namespaces
        .iter()
        .map(|n| memory_change(&n.current, &n.sized).abs())
        .max()
        .unwrap_or(0);
    let width = 40.0 + GROUP_W * r.namespaces.len().max(1) as f64;
    let height = 2.0 * BAR_MAX + 60.0;
    let mut out = format!(
        "<svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"CPU and memory request change per namespace\">"
    );
    let mid = BAR_MAX + 10.0;
    let _ = write!(
        out,
        "<line x1=\"0\" y1=\"{mid}\" x2=\"{width}\" y2=\"{mid}\" class=\"axis\"/>"
    );
    for (i, n) in r.namespaces.iter().enumerate() {
        let x = 20.0 + GROUP_W * i as f64;
        let dc = cpu_change(&n.current, &n.sized);
        let dm = memory_change(&n.current, &n.sized);
        let _ = write!(out, "<g class=\"ns\" data-ns=\"{}\">", esc(&n.name));
        out.push_str(&bar(
            "cpu",
            x,
            dc,
            max_cpu,
            &format!("{}: CPU requests {}", n.name, signed_cpu(dc)),
        ));
        out.push_str(&bar(
            "memory",
            x + BAR_W + 4.0,
            dm,
            max_mem,
            &format!("{}: memory requests {}", n.name, signed_memory(dm)),
        ));
        let _ = write!(
            out,
            "<text x=\"{:.2}\" y=\"{:.2}\" class=\"label\">{}</text></g>",
            x,
            2.0 * BAR_MAX + 40.0,
            esc(&n.name)
        );
    }
    out.push_str("</svg>");
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}\
th{background:#f3f3f3;cursor:pointer}td.num{text-align:right}\
.bar.cpu{fill:#4a7bd0}.bar.memory{fill:#d08a4a}.axis{stroke:#888}.label{font-size:11px}\
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}";

const SCRIPT: &str = "document.querySelectorAll('#workloads th').forEach(function(th,i){\
th.addEventListener('click',function(){var tb=document.querySelector('#workloads tbody');\
var rows=Array.prototype.slice.call(tb.rows);var asc=th.dataset.dir!=='asc';th.dataset.dir=asc?'asc':'desc';\
rows.sort(function(a,b){var x=a.cells[i].dataset.sort||a.cells[i].textContent,y=b.cells[i].dataset.sort||b.cells[i].textContent;\
var nx=parseFloat(x),ny=parseFloat(y);var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return asc?c:-c;});\
rows.forEach(function(r){tb.appendChild(r);});});});";

/// One self-contained HTML file: totals, an SVG chart of request change per namespace and
/// a sortable workload table. No network: inline CSS, JS and SVG; every name escaped.
pub fn html(r: &Report) -> String {
    let mut out = String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>sidecar-sizer report</title>");
    let _ = write!(out, "<style>{STYLE}</style></head><body>");
    out.push_str("<h1>istio-proxy sizing report</h1>");
    out.push_str("<h2>Totals</h2><table id=\"totals\"><thead><tr><th>Namespace</th><th>Mode</th><th>Pods</th><th>Current req/lim</th><th>Sized req/lim</th><th>CPU request change</th><th>Memory request change</th></tr></thead><tbody>");
    let mut total_row = |name: &str, mode: &str, pods: u64, c: &Sums, s: &Sums, class: &str| {
        let _ = write!(
            out,
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td class=\"num\">{pods}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(name),
            esc(mode),
            esc(&human_sums(c)),
            esc(&human_sums(s)),
            esc(&signed_cpu(cpu_change(c, s))),
            esc(&signed_memory(memory_change(c, s)))
        );
    };
    for n in &r.namespaces {
        total_row(&n.name, &n.mode, n.pods, &n.current, &n.sized, "namespace");
    }
    total_row("(cluster)", "", r.pods, &r.current, &r.sized, "cluster");
    out.push_str("</tbody></table>");
    out.push_str("<h2>Request change per namespace</h2><div class=\"legend\"><span style=\"background:#4a7bd0\"></span>CPU<span style=\"background:#d08a4a\"></span>memory (each scaled to its largest change; up = more)</div>");
    out.push_str(&chart(r));
    let _ = write!(
        out,
        "<p>{} pods listed, {} without istio-proxy.</p>",
        r.pods_listed, r.pods_without_proxy
    );
    if !r.unreadable.is_empty() {
        let _ = write!(
            out,
            "<p id=\"unreadable\">Not allowed to list pods in: {}</p>",
            esc(&r.unreadable.join(", "))
        );
    }
    out.push_str("<h2>Workloads</h2><table id=\"workloads\"><thead><tr>");
    for h in [
        "Namespace",
        "Kind",
        "Name",
        "Mode",
        "Pods",
        "Current req/lim",
        "Sized req/lim",
        "CPU request change (m)",
        "Source",
        "Findings",
    ] {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    for w in &r.workloads {
        let dc = cpu_change(&w.sum_current, &w.sum_sized);
        let findings: Vec<String> = w.findings.iter().map(|f| esc(&f.message)).collect();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\" data-sort=\"{dc}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&w.namespace),
            esc(&w.kind),
            esc(&w.name),
            esc(&w.mode),
            w.pods,
            esc(&current_text(w)),
            esc(&sized_text(w)),
            esc(&signed_cpu(dc)),
            esc(&w.source),
            findings.join("<br>")
        );
    }
    out.push_str("</tbody></table>");
    let _ = writeln!(out, "<script>{SCRIPT}</script></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{NamespaceTotals, Row};

    fn report_named(ns: &str, name: &str) -> Report {
        let row = Row {
            namespace: ns.into(),
            kind: "Pod".into(),
            name: name.into(),
            mode: "off".into(),
            pods: 1,
            current: Values::default(),
            current_varies: false,
            sized: None,
            not_sized: Some("x".into()),
            source: String::new(),
            reasons: vec![],
            notes: vec![],
            findings: vec![],
            sum_current: Sums::default(),
            sum_sized: Sums::default(),
        };
        Report {
            namespaces: vec![NamespaceTotals {
                name: ns.into(),
                mode: "off".into(),
                pods: 1,
                current: Sums::default(),
                sized: Sums::default(),
            }],
            workloads: vec![row],
            pods: 1,
            ..Report::default()
        }
    }

    #[test]
    fn html_escapes_every_name() {
        let evil = "<script>alert('x')</script>&\"";
        let html = html(&report_named(evil, evil));
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("alert('x')"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
        // Exactly the one inline script of our own.
        assert_eq!(html.matches("<script>").count(), 1);
    }

    #[test]
    fn csv_quotes_and_markdown_escapes_pipes() {
        let r = report_named("a,b", "x\"y|z");
        let c = csv(&r);
        assert!(c.contains("\"a,b\",Pod,\"x\"\"y|z\""), "{c}");
        let m = markdown(&r);
        assert!(m.contains("x\"y\\|z"), "{m}");
    }
}
