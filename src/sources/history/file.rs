//! The `--history FILE` format:
//!
//! ```text
//! # namespace,workload,container,cpu_p95_cores,memory_max_bytes,samples,hours,avg_replicas,oom_kills
//! shop,cart,istio-proxy,0.212,73400320,4032,336,6,0
//! shop,cart,master,0.61,734003200,4032,336,6,0
//! ```
//! One row per (namespace, workload, container). Lines starting with `#` and blank lines
//! are ignored; a header line starting with `namespace,` is allowed. `avg_replicas` is the
//! workload's average replica count over the window (the same on each of its rows).

use super::{ContainerUsage, UsageSnapshot};
use std::fmt;
use std::path::Path;

/// A problem in a history file, with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

const COLUMNS: [&str; 9] = [
    "namespace",
    "workload",
    "container",
    "cpu_p95_cores",
    "memory_max_bytes",
    "samples",
    "hours",
    "avg_replicas",
    "oom_kills",
];

/// Parse a history file. Bad rows are reported and skipped; good rows are kept.
pub fn parse_history(text: &str) -> (UsageSnapshot, Vec<HistoryError>) {
    let mut snap = UsageSnapshot::default();
    let mut errors = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("namespace,") {
            continue;
        }
        match parse_row(trimmed) {
            Ok((ns, wl, container, usage, replicas)) => {
                let w = snap.entry(ns, wl);
                if w.containers.contains_key(container) {
                    errors.push(HistoryError {
                        line,
                        message: format!(
                            "duplicate row for {ns}/{wl} container {container}; ignored"
                        ),
                    });
                    continue;
                }
                // The proxy's row is authoritative for the replica count.
                if w.avg_replicas.is_none() || container == "istio-proxy" {
                    w.avg_replicas = replicas;
                }
                w.containers.insert(container.to_string(), usage);
            }
            Err(message) => errors.push(HistoryError { line, message }),
        }
    }
    (snap, errors)
}

type Row<'a> = (&'a str, &'a str, &'a str, ContainerUsage, Option<f64>);

fn parse_row(line: &str) -> Result<Row<'_>, String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    if fields.len() != COLUMNS.len() {
        return Err(format!(
            "expected {} comma-separated fields ({}), found {}",
            COLUMNS.len(),
            COLUMNS.join(","),
            fields.len()
        ));
    }
    for (i, name) in COLUMNS.iter().enumerate().take(3) {
        if fields[i].is_empty() {
            return Err(format!("{name} is empty"));
        }
    }
    let cpu = number(COLUMNS[3], fields[3])?;
    let mem = integer(COLUMNS[4], fields[4])?;
    let samples = integer(COLUMNS[5], fields[5])?;
    let hours = number(COLUMNS[6], fields[6])?;
    let replicas = if fields[7].is_empty() {
        None
    } else {
        let r = number(COLUMNS[7], fields[7])?;
        if r <= 0.0 {
            return Err(format!(
                "avg_replicas {:?} must be greater than zero",
                fields[7]
            ));
        }
        Some(r)
    };
    let oom = integer(COLUMNS[8], fields[8])?;
    Ok((
        fields[0],
        fields[1],
        fields[2],
        ContainerUsage {
            cpu_p95_cores: cpu,
            memory_max_bytes: mem,
            samples,
            hours,
            oom_kills: u32::try_from(oom).unwrap_or(u32::MAX),
        },
        replicas,
    ))
}

fn number(name: &str, text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{name} {text:?} is not a finite number >= 0")),
    }
}

fn integer(name: &str, text: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .map_err(|_| format!("{name} {text:?} is not a whole number >= 0"))
}

/// Read a history file from disk.
pub fn load_history_file(path: &Path) -> Result<(UsageSnapshot, Vec<HistoryError>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read history file: {e}", path.display()))?;
    let (mut snap, errors) = parse_history(&text);
    snap.meta.source = format!("file {}", path.display());
    Ok((snap, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_and_reports_bad_ones() {
        let text = "\
# comment
namespace,workload,container,cpu_p95_cores,memory_max_bytes,samples,hours,avg_replicas,oom_kills
shop,cart,master,0.6,734003200,4032,336,5,0
shop,cart,istio-proxy,0.212,73400320,4032,336,6,1
shop,web,istio-proxy,abc,1,1,1,1,0
shop,web,istio-proxy,NaN,1,1,1,1,0
shop,web,istio-proxy,0.1,-5,1,1,1,0
shop,web,istio-proxy,0.1,5,1,1
shop,cart,master,0.6,734003200,4032,336,5,0
";
        let (snap, errors) = parse_history(text);
        let cart = snap.get("shop", "cart").unwrap();
        assert_eq!(cart.avg_replicas, Some(6.0));
        let p = &cart.containers["istio-proxy"];
        assert_eq!(p.cpu_p95_cores, 0.212);
        assert_eq!(p.memory_max_bytes, 73400320);
        assert_eq!(p.samples, 4032);
        assert_eq!(p.oom_kills, 1);
        assert!(snap.get("shop", "web").is_none());
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![5, 6, 7, 8, 9]);
        assert!(errors[0].message.contains("cpu_p95_cores \"abc\""));
        assert!(errors[2].message.contains("memory_max_bytes \"-5\""));
        assert!(errors[4].message.contains("duplicate"));
        assert_eq!(snap.len(), 1);
    }
}
