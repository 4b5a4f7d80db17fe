//! Manifests as kubectl reads them, and edits that keep every other byte.
//!
//! A document is parsed once into a tree of [`Node`]s that remember where they are in the
//! text (byte spans from granit-parser's events). Two things are built on that tree:
//! - a **YAML 1.1 view** of what the pipeline needs (kind, names, the pod template's
//!   metadata, containers, `hostNetwork`, pod-level resources), read the way kubectl,
//!   Helm and Argo CD read YAML: anchors and aliases resolved, merge keys (`<<`) applied,
//!   `yes/no/on/off` booleans. Nothing else is decoded, so unrelated fields (a volume's
//!   `defaultMode: 0644`) can never fail a document;
//! - **text edits**: a value scalar's span replaced, entries appended after the last one of
//!   a mapping at its own indentation, `annotations:`/`metadata:` blocks added with the
//!   document's indentation step, members inserted into flow mappings and JSON objects.
//!   Our values are always double-quoted strings. Everything else — quoting, comments, flow
//!   style, key order, separators, CRLF, the trailing newline — stays as it was.

use granit_parser::{Event, Parser, ScalarStyle, StructureStyle};
use std::collections::HashMap;

/// Aliases are copied into the tree; a document whose aliases expand beyond this many nodes
/// is refused ("billion laughs").
const MAX_NODES: usize = 200_000;

/// A document of a multi-document input: its text and first line (1-based, in the file).
pub struct Doc<'t> {
    pub text: &'t str,
    pub line: usize,
}

/// Split a stream at `---` lines. Separators are kept verbatim so the file can be put back
/// together byte for byte: `docs[0] + seps[0] + docs[1] + ...`.
pub fn split_docs(text: &str) -> (Vec<Doc<'_>>, Vec<&str>) {
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

/// Only comments, blank lines and document end markers.
pub fn is_blank(doc: &str) -> bool {
    doc.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "..."
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    Block,
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    Scalar {
        value: String,
        style: Style,
    },
    Seq {
        items: Vec<Node>,
        flow: bool,
    },
    Map {
        entries: Vec<(Node, Node)>,
        flow: bool,
    },
}

/// A node and where it is in the document's text.
#[derive(Debug, Clone)]
pub struct Node {
    pub kind: NodeKind,
    /// Byte range in the document text (for an alias: the `*name` token).
    pub start: usize,
    pub end: usize,
    /// 0-based column (in characters) of the first character.
    pub col: usize,
    /// A copy of an anchored node made by an alias: its text is elsewhere and shared, so it
    /// is never edited.
    pub aliased: bool,
}

/// A YAML syntax error: 1-based line within the document and the parser's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// A parsed document: its root node(s) and the indentation step its block mappings use.
#[derive(Debug)]
pub struct Parsed {
    pub roots: Vec<Node>,
    pub step: usize,
}

enum Frame {
    Seq {
        start: usize,
        col: usize,
        anchor: usize,
        flow: bool,
        items: Vec<Node>,
    },
    Map {
        start: usize,
        col: usize,
        anchor: usize,
        flow: bool,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

fn count(n: &Node) -> usize {
    1 + match &n.kind {
        NodeKind::Scalar { .. } => 0,
        NodeKind::Seq { items, .. } => items.iter().map(count).sum(),
        NodeKind::Map { entries, .. } => entries.iter().map(|(k, v)| count(k) + count(v)).sum(),
    }
}

/// Every node of an alias's copy points at the anchor's text: none may be edited.
fn mark_aliased(n: &mut Node) {
    n.aliased = true;
    match &mut n.kind {
        NodeKind::Scalar { .. } => {}
        NodeKind::Seq { items, .. } => items.iter_mut().for_each(mark_aliased),
        NodeKind::Map { entries, .. } => entries.iter_mut().for_each(|(k, v)| {
            mark_aliased(k);
            mark_aliased(v);
        }),
    }
}

/// Parse one document's text (a text may hold more than one if it uses separators we do not
/// split on; every root is returned).
pub fn parse(text: &str) -> Result<Parsed, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut roots = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut nodes = 0usize;
    let mut step: Option<usize> = None;
    let err = |line: usize, message: String| SyntaxError { line, message };
    while let Some(ev) = parser.next_event() {
        let (event, span) = ev.map_err(|e| err(e.marker().line(), e.info()))?;
        let (start, end) = span
            .byte_range()
            .map(|r| (r.start, r.end))
            .ok_or_else(|| err(span.start.line(), "no byte offsets".into()))?;
        let col = span.start.col();
        let done = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => None,
            Event::DocumentStart(..) => {
                anchors.clear();
                None
            }
            Event::Scalar(value, style, anchor, _) => {
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
                    _ => Style::Block,
                };
                let node = Node {
                    kind: NodeKind::Scalar {
                        value: value.into_owned(),
                        style,
                    },
                    start,
                    end,
                    col,
                    aliased: false,
                };
                if anchor > 0 {
                    anchors.insert(anchor, node.clone());
                }
                Some(node)
            }
            Event::Alias(id) => {
                let Some(target) = anchors.get(&id) else {
                    return Err(err(span.start.line(), "unknown alias".into()));
                };
                nodes += count(target);
                if nodes > MAX_NODES {
                    return Err(err(
                        span.start.line(),
                        format!("aliases expand beyond {MAX_NODES} nodes"),
                    ));
                }
                let mut node = target.clone();
                mark_aliased(&mut node);
                node.start = start;
                node.end = end;
                node.col = col;
                Some(node)
            }
            Event::SequenceStart(style, anchor, _) => {
                stack.push(Frame::Seq {
                    start,
                    col,
                    anchor,
                    flow: style == StructureStyle::Flow,
                    items: Vec::new(),
                });
                None
            }
            Event::MappingStart(style, anchor, _) => {
                stack.push(Frame::Map {
                    start,
                    col,
                    anchor,
                    flow: style == StructureStyle::Flow,
                    entries: Vec::new(),
                    key: None,
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match stack.pop() {
                    Some(Frame::Seq {
                        start: s,
                        col,
                        anchor,
                        flow,
                        items,
                    }) => (
                        Node {
                            kind: NodeKind::Seq { items, flow },
                            start: s,
                            end,
                            col,
                            aliased: false,
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        start: s,
                        col,
                        anchor,
                        flow,
                        entries,
                        ..
                    }) => {
                        if !flow && step.is_none() {
                            // The first nested block mapping gives the document's step.
                            step = entries.iter().find_map(|(k, v)| match &v.kind {
                                NodeKind::Map {
                                    flow: false,
                                    entries: inner,
                                } if !v.aliased => inner
                                    .first()
                                    .and_then(|(ik, _)| ik.col.checked_sub(k.col))
                                    .filter(|s| *s > 0),
                                _ => None,
                            });
                        }
                        (
                            Node {
                                kind: NodeKind::Map { entries, flow },
                                start: s,
                                end,
                                col,
                                aliased: false,
                            },
                            anchor,
                        )
                    }
                    None => return Err(err(span.start.line(), "unbalanced collection".into())),
                };
                if anchor > 0 {
                    anchors.insert(anchor, node.clone());
                }
                Some(node)
            }
            _ => None,
        };
        let Some(node) = done else { continue };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(err(
                span.start.line(),
                format!("more than {MAX_NODES} nodes"),
            ));
        }
        match stack.last_mut() {
            None => roots.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
    Ok(Parsed {
        roots,
        step: step.unwrap_or(2),
    })
}

// ---- the YAML 1.1 view -------------------------------------------------------------------

impl Node {
    /// A scalar's value (any style); `None` for collections.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// A scalar's value unless it is a YAML null (`~`, `null`, empty; plain only).
    pub fn as_text(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, style } if !(*style == Style::Plain && is_null(value)) => {
                Some(value)
            }
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { value, style: Style::Plain } if is_null(value))
    }

    pub fn is_map(&self) -> bool {
        matches!(self.kind, NodeKind::Map { .. })
    }

    fn own(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map { entries, .. } => entries
                .iter()
                .rev()
                .find(|(k, _)| !is_merge(k) && k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The mappings merged into this one by `<<` keys, in priority order.
    fn merged(&self) -> Vec<&Node> {
        let NodeKind::Map { entries, .. } = &self.kind else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in entries.iter().filter(|(k, _)| is_merge(k)) {
            match &v.kind {
                NodeKind::Map { .. } => out.push(v),
                NodeKind::Seq { items, .. } => out.extend(items.iter().filter(|i| i.is_map())),
                NodeKind::Scalar { .. } => {}
            }
            let _ = k;
        }
        out
    }

    /// `key`'s value as YAML 1.1 reads it: own entries first, then merged mappings.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.own(key)
            .or_else(|| self.merged().into_iter().find_map(|m| m.get(key)))
    }

    pub fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |n, k| n.get(k))
    }

    pub fn str_at(&self, path: &[&str]) -> &str {
        self.at(path).and_then(Node::as_text).unwrap_or("")
    }

    pub fn items(&self) -> &[Node] {
        match &self.kind {
            NodeKind::Seq { items, .. } => items,
            _ => &[],
        }
    }

    /// Every key of a mapping (merged ones after own ones), each once, with its value.
    pub fn pairs(&self) -> Vec<(&str, &Node)> {
        let mut out: Vec<(&str, &Node)> = Vec::new();
        if let NodeKind::Map { entries, .. } = &self.kind {
            for (k, v) in entries.iter().rev() {
                if let Some(k) = k.as_str().filter(|_| !is_merge(k)) {
                    if !out.iter().any(|(o, _)| *o == k) {
                        out.push((k, v));
                    }
                }
            }
            out.reverse();
        }
        for m in self.merged() {
            for (k, v) in m.pairs() {
                if !out.iter().any(|(o, _)| *o == k) {
                    out.push((k, v));
                }
            }
        }
        out
    }

    /// A string map (labels, annotations, quantities): scalar values as written.
    pub fn string_map(&self) -> serde_json::Map<String, serde_json::Value> {
        self.pairs()
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.as_text()?.to_string().into())))
            .collect()
    }

    /// A boolean as YAML 1.1 (and so kubectl) reads it: `true/yes/on/y` and `false/no/off/n`
    /// in lower, Title or UPPER case.
    pub fn as_bool(&self) -> Option<bool> {
        yaml11_bool(self.as_text()?)
    }
}

fn is_null(v: &str) -> bool {
    matches!(v, "" | "~" | "null" | "Null" | "NULL")
}

fn is_merge(k: &Node) -> bool {
    matches!(&k.kind, NodeKind::Scalar { value, style: Style::Plain } if value == "<<")
}

pub fn yaml11_bool(v: &str) -> Option<bool> {
    match v {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Some(false)
        }
        _ => None,
    }
}

/// The parts of a pod (template) the pipeline reads, as JSON for k8s-openapi's `Pod`:
/// metadata (name, generateName, namespace, labels, annotations), containers and
/// initContainers (name, image, restartPolicy, resources), `hostNetwork` and pod-level
/// resources.
pub fn pod_json(template: &Node) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let mut meta = Map::new();
    if let Some(m) = template.get("metadata") {
        for key in ["name", "generateName", "namespace"] {
            if let Some(v) = m.get(key).and_then(Node::as_text) {
                meta.insert(key.into(), v.into());
            }
        }
        for key in ["labels", "annotations"] {
            if let Some(v) = m.get(key).filter(|v| v.is_map()) {
                meta.insert(key.into(), Value::Object(v.string_map()));
            }
        }
    }
    let resources = |r: &Node| {
        let mut out = Map::new();
        for key in ["requests", "limits"] {
            if let Some(v) = r.get(key).filter(|v| v.is_map()) {
                out.insert(key.into(), Value::Object(v.string_map()));
            }
        }
        Value::Object(out)
    };
    let containers = |list: Option<&Node>| -> Vec<Value> {
        list.map(Node::items)
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let mut out = Map::new();
                out.insert("name".into(), c.str_at(&["name"]).into());
                // The image tells an owner's istio-proxy customisation (`auto` or none) from
                // an injected proxy (engine::patch).
                for key in ["restartPolicy", "image"] {
                    if let Some(p) = c.get(key).and_then(Node::as_text) {
                        out.insert(key.into(), p.into());
                    }
                }
                if let Some(r) = c.get("resources").filter(|r| r.is_map()) {
                    out.insert("resources".into(), resources(r));
                }
                Value::Object(out)
            })
            .collect()
    };
    let spec = template.get("spec");
    let mut s = Map::new();
    s.insert(
        "containers".into(),
        containers(spec.and_then(|s| s.get("containers"))).into(),
    );
    if let Some(init) = spec.and_then(|s| s.get("initContainers")) {
        s.insert("initContainers".into(), containers(Some(init)).into());
    }
    if let Some(h) = spec
        .and_then(|s| s.get("hostNetwork"))
        .and_then(Node::as_bool)
    {
        s.insert("hostNetwork".into(), h.into());
    }
    if let Some(r) = spec.and_then(|s| s.get("resources")).filter(|r| r.is_map()) {
        s.insert("resources".into(), resources(r));
    }
    json!({ "metadata": meta, "spec": s })
}

// ---- text edits --------------------------------------------------------------------------

/// What a mapping should hold after the edit.
#[derive(Debug, Clone)]
pub enum Want {
    /// A string, compared as written.
    Str(String),
    /// A Kubernetes quantity, compared by value (`1000m` equals `1`).
    Qty(String),
    Map(Vec<(String, Want)>),
}

impl Want {
    fn text(&self) -> Option<&str> {
        match self {
            Want::Str(s) | Want::Qty(s) => Some(s),
            Want::Map(_) => None,
        }
    }

    fn satisfied_by(&self, have: &str) -> bool {
        use crate::engine::quantity::Quantity;
        match self {
            Want::Str(s) => s == have,
            Want::Qty(s) => match (Quantity::parse(s), Quantity::parse(have)) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            },
            Want::Map(_) => false,
        }
    }
}

/// Text edits on one document: non-overlapping `(start, end, replacement)` byte ranges.
pub struct Editor<'t> {
    text: &'t str,
    step: usize,
    eol: &'static str,
    edits: Vec<(usize, usize, String)>,
}

fn quote(s: &str) -> String {
    // JSON string escapes are valid in YAML double-quoted scalars (1.1 and 1.2).
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn block_key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'/' | b'-' | b'_'))
        && k.as_bytes()[0].is_ascii_alphanumeric();
    if plain {
        k.to_string()
    } else {
        quote(k)
    }
}

impl<'t> Editor<'t> {
    pub fn new(text: &'t str, step: usize) -> Editor<'t> {
        let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
        Editor {
            text,
            step: step.max(1),
            eol,
            edits: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// The text with every edit made.
    pub fn apply(&self) -> String {
        let mut edits: Vec<&(usize, usize, String)> = self.edits.iter().collect();
        edits.sort_by_key(|e| (e.0, e.1));
        let mut out = String::with_capacity(self.text.len() + 256);
        let mut at = 0;
        for (s, e, t) in edits {
            if *s < at || *e > self.text.len() {
                continue; // overlapping or out of range: never produced, never applied
            }
            out.push_str(self.text.get(at..*s).unwrap_or(""));
            out.push_str(t);
            at = *e;
        }
        out.push_str(self.text.get(at..).unwrap_or(""));
        out
    }

    /// Make mapping `map` hold `wants`, touching only what differs. On an error (a value
    /// that is not a mapping, a key that only a merge key or an alias provides) nothing of
    /// this call is kept.
    pub fn edit_map(&mut self, map: &Node, wants: &[(String, Want)]) -> Result<(), String> {
        let before = self.edits.len();
        let r = self.edit_map_inner(map, wants);
        if r.is_err() {
            self.edits.truncate(before);
        }
        r
    }

    fn edit_map_inner(&mut self, map: &Node, wants: &[(String, Want)]) -> Result<(), String> {
        if map.aliased {
            return Err("the mapping is an alias (*anchor); edit its anchor by hand".into());
        }
        let NodeKind::Map { entries, flow } = &map.kind else {
            return Err("not a mapping".into());
        };
        let mut missing: Vec<(String, Want)> = Vec::new();
        for (key, want) in wants {
            let own = entries
                .iter()
                .rev()
                .find(|(k, _)| !is_merge(k) && k.as_str() == Some(key.as_str()));
            let Some((k, v)) = own else {
                if map.get(key).is_some() {
                    return Err(format!(
                        "`{key}` comes from a merge key (<<); edit it by hand"
                    ));
                }
                missing.push((key.clone(), want.clone()));
                continue;
            };
            if v.aliased {
                return Err(format!("`{key}` is an alias (*anchor); edit it by hand"));
            }
            match (want, &v.kind) {
                (Want::Map(sub), NodeKind::Map { .. }) => self.edit_map_inner(v, sub)?,
                (Want::Map(sub), _) if v.is_null() && !flow => {
                    // `annotations:` with nothing (or `~`): the block goes under the key.
                    let at = self.line_end(k.end.max(v.end));
                    let mut text = String::new();
                    for (sk, sw) in sub {
                        self.render_block(&mut text, sk, sw, k.col + self.step);
                    }
                    if v.end > v.start {
                        self.edits.push((v.start, v.end, String::new()));
                    }
                    self.edits.push((at, at, text));
                }
                (Want::Map(_), _) => return Err(format!("`{key}` is not a mapping")),
                (w, NodeKind::Scalar { value, .. }) => {
                    let Some(text) = w.text() else { continue };
                    if !v.is_null() && w.satisfied_by(value) {
                        continue;
                    }
                    if v.end > v.start {
                        self.edits.push((v.start, v.end, quote(text)));
                    } else {
                        // `key:` with an empty value: the value goes after the colon.
                        let colon = self
                            .slice(k.end, usize::MAX)
                            .find(':')
                            .map_or(k.end, |i| k.end + i + 1);
                        self.edits.push((colon, colon, format!(" {}", quote(text))));
                    }
                }
                (_, _) => return Err(format!("`{key}` is not a string")),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if *flow {
            self.insert_flow(map, entries, &missing)
        } else {
            let Some((first, _)) = entries.first() else {
                return Err("empty block mapping".into());
            };
            let indent = first.col;
            // `metadata` goes first, where Kubernetes objects keep it, when the first key
            // starts its own line; everything else after the last entry.
            let line_start = self.slice(0, first.start).rfind('\n').map_or(0, |i| i + 1);
            let own_line = self
                .slice(line_start, first.start)
                .bytes()
                .all(|b| b == b' ');
            let (front, back): (Vec<_>, Vec<_>) = missing
                .into_iter()
                .partition(|(k, _)| own_line && k == "metadata");
            if !front.is_empty() {
                let mut text = String::new();
                for (k, w) in &front {
                    self.render_block(&mut text, k, w, indent);
                }
                // Rendered lines start with a line break: move it to the end, and the
                // first key's own indentation stays where it is.
                let text = format!(
                    "{}{}{}",
                    text.get(self.eol.len() + indent..).unwrap_or(""),
                    self.eol,
                    " ".repeat(indent)
                );
                self.edits.push((first.start, first.start, text));
            }
            if !back.is_empty() {
                let at = entries
                    .iter()
                    .map(|(k, v)| self.entry_end(k, v))
                    .max()
                    .unwrap_or(map.end);
                let at = self.line_end(at);
                let mut text = String::new();
                for (k, w) in &back {
                    self.render_block(&mut text, k, w, indent);
                }
                self.edits.push((at, at, text));
            }
            Ok(())
        }
    }

    fn insert_flow(
        &mut self,
        map: &Node,
        entries: &[(Node, Node)],
        missing: &[(String, Want)],
    ) -> Result<(), String> {
        let open = self
            .slice(map.start, map.end)
            .find('{')
            .map(|i| map.start + i + 1)
            .ok_or("flow mapping without `{`")?;
        let Some((last_k, last_v)) = entries.last() else {
            // `{}`: members go right after the brace.
            let members: Vec<String> = missing
                .iter()
                .map(|(k, w)| self.render_flow(k, w))
                .collect();
            self.edits.push((open, open, members.join(", ")));
            return Ok(());
        };
        let multiline = self.slice(map.start, map.end).contains('\n');
        if multiline {
            // JSON files: one member a line at the members' indentation, first in the
            // object, so no existing line changes (not even to gain a comma).
            let indent = entries.first().map_or(last_k.col, |(k, _)| k.col);
            // The file's own step: members' column minus the brace line's indentation.
            let line_start = self.slice(0, open).rfind('\n').map_or(0, |i| i + 1);
            let brace_indent = self
                .slice(line_start, open)
                .chars()
                .take_while(|c| *c == ' ')
                .count();
            let step = indent
                .checked_sub(brace_indent)
                .filter(|s| *s > 0)
                .unwrap_or(self.step);
            let mut text = String::new();
            for (k, w) in missing {
                text.push_str(self.eol);
                text.push_str(&" ".repeat(indent));
                text.push_str(&self.render_flow_multiline(k, w, indent, step));
                text.push(',');
            }
            self.edits.push((open, open, text));
        } else {
            let mut text = String::new();
            for (k, w) in missing {
                text.push_str(", ");
                text.push_str(&self.render_flow(k, w));
            }
            let at = self.entry_end(last_k, last_v);
            self.edits.push((at, at, text));
        }
        Ok(())
    }

    fn render_block(&self, out: &mut String, key: &str, want: &Want, indent: usize) {
        out.push_str(self.eol);
        out.push_str(&" ".repeat(indent));
        out.push_str(&block_key(key));
        out.push(':');
        match want {
            Want::Map(sub) => {
                for (k, w) in sub {
                    self.render_block(out, k, w, indent + self.step);
                }
            }
            w => {
                out.push(' ');
                out.push_str(&quote(w.text().unwrap_or("")));
            }
        }
    }

    fn render_flow(&self, key: &str, want: &Want) -> String {
        match want {
            Want::Map(sub) => {
                let members: Vec<String> =
                    sub.iter().map(|(k, w)| self.render_flow(k, w)).collect();
                format!("{}: {{{}}}", quote(key), members.join(", "))
            }
            w => format!("{}: {}", quote(key), quote(w.text().unwrap_or(""))),
        }
    }

    fn render_flow_multiline(&self, key: &str, want: &Want, indent: usize, step: usize) -> String {
        match want {
            Want::Map(sub) => {
                let inner = " ".repeat(indent + step);
                let members: Vec<String> = sub
                    .iter()
                    .map(|(k, w)| {
                        format!(
                            "{}{inner}{}",
                            self.eol,
                            self.render_flow_multiline(k, w, indent + step, step)
                        )
                    })
                    .collect();
                format!(
                    "{}: {{{}{}{}}}",
                    quote(key),
                    members.join(","),
                    self.eol,
                    " ".repeat(indent)
                )
            }
            w => self.render_flow(key, w),
        }
    }

    /// Where an entry's text ends: the end of its last scalar or flow collection.
    fn entry_end(&self, key: &Node, value: &Node) -> usize {
        key.end.max(self.node_end(value).unwrap_or(0))
    }

    fn node_end(&self, n: &Node) -> Option<usize> {
        if n.aliased {
            return Some(n.end);
        }
        match &n.kind {
            NodeKind::Scalar {
                style: Style::Block,
                ..
            } => {
                // A block scalar's span runs into the following line breaks: stop at its
                // last character.
                let body = self.text.get(n.start..n.end)?;
                Some(n.start + body.trim_end().len())
            }
            NodeKind::Scalar { .. } if n.end == n.start => None,
            NodeKind::Scalar { .. } => Some(n.end),
            NodeKind::Seq { flow: true, .. } | NodeKind::Map { flow: true, .. } => Some(n.end),
            NodeKind::Seq { items, .. } => items.iter().filter_map(|i| self.node_end(i)).max(),
            NodeKind::Map { entries, .. } => {
                entries.iter().map(|(k, v)| self.entry_end(k, v)).max()
            }
        }
    }

    /// `text[start..end]` (end clamped), or "" when the range is not one: spans come from
    /// the parser and are trusted, but a bad one must not panic.
    fn slice(&self, start: usize, end: usize) -> &str {
        self.text.get(start..end.min(self.text.len())).unwrap_or("")
    }

    /// The end of the line holding byte `at` (before its line break).
    fn line_end(&self, at: usize) -> usize {
        let at = at.min(self.text.len());
        match self.slice(at, usize::MAX).find('\n') {
            Some(i) => {
                let nl = at + i;
                if nl > at && self.text.as_bytes()[nl - 1] == b'\r' {
                    nl - 1
                } else {
                    nl
                }
            }
            None => self.text.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        parse(text).unwrap().roots.remove(0)
    }

    fn edit(text: &str, path: &[&str], wants: Vec<(&str, Want)>) -> String {
        let p = parse(text).unwrap();
        let mut ed = Editor::new(text, p.step);
        let mut node = &p.roots[0];
        for k in path {
            node = node.get(k).unwrap();
        }
        let wants: Vec<(String, Want)> =
            wants.into_iter().map(|(k, w)| (k.to_string(), w)).collect();
        ed.edit_map(node, &wants).unwrap();
        ed.apply()
    }

    fn s(v: &str) -> Want {
        Want::Str(v.into())
    }

    fn m(entries: Vec<(&str, Want)>) -> Want {
        Want::Map(
            entries
                .into_iter()
                .map(|(k, w)| (k.to_string(), w))
                .collect(),
        )
    }

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

    #[test]
    fn yaml11_view() {
        let t = "base: &b\n  hostNetwork: yes\n  x: 1\nspec:\n  <<: *b\n  x: 2\n  mode: 0644\n  on: \"on\"\n";
        let r = root(t);
        assert_eq!(
            r.at(&["spec", "hostNetwork"]).and_then(Node::as_bool),
            Some(true)
        );
        assert_eq!(r.str_at(&["spec", "x"]), "2");
        assert_eq!(r.str_at(&["spec", "mode"]), "0644");
        let keys: Vec<&str> = r.get("spec").unwrap().pairs().iter().map(|p| p.0).collect();
        assert_eq!(keys, vec!["x", "mode", "on", "hostNetwork"]);
        assert!(r.get("spec").unwrap().get("<<").is_none());
    }

    #[test]
    fn replaces_values_and_appends_entries_in_place() {
        let t = "metadata:\n    annotations:\n        a: 'x'   # keep\n        b: \"on\"\n    labels: {app: cart}\n";
        let got = edit(
            t,
            &["metadata", "annotations"],
            vec![("a", s("y")), ("b", s("on")), ("c/d", s("1"))],
        );
        assert_eq!(
            got,
            "metadata:\n    annotations:\n        a: \"y\"   # keep\n        b: \"on\"\n        c/d: \"1\"\n    labels: {app: cart}\n"
        );
    }

    #[test]
    fn adds_blocks_with_the_documents_step() {
        let t = "template:\n    metadata:\n        labels:\n            app: x\n    spec: {}\n";
        let got = edit(
            t,
            &["template"],
            vec![("metadata", m(vec![("annotations", m(vec![("k", s("v"))]))]))],
        );
        assert_eq!(
            got,
            "template:\n    metadata:\n        labels:\n            app: x\n        annotations:\n            k: \"v\"\n    spec: {}\n"
        );
        // No metadata at all (it goes first, where objects keep it), CRLF, no trailing
        // newline.
        let t = "template:\r\n  spec:\r\n    containers: []";
        let got = edit(
            t,
            &["template"],
            vec![("metadata", m(vec![("annotations", m(vec![("k", s("v"))]))]))],
        );
        assert_eq!(
            got,
            "template:\r\n  metadata:\r\n    annotations:\r\n      k: \"v\"\r\n  spec:\r\n    containers: []"
        );
        // An empty `annotations:`.
        let t = "metadata:\n  annotations: # none yet\n  labels:\n    a: b\n";
        let got = edit(
            t,
            &["metadata"],
            vec![("annotations", m(vec![("k", s("v"))]))],
        );
        assert_eq!(
            got,
            "metadata:\n  annotations: # none yet\n    k: \"v\"\n  labels:\n    a: b\n"
        );
    }

    #[test]
    fn flow_mappings_and_json() {
        let t = "metadata: {labels: {app: cart}, annotations: {a: b}}\n";
        let got = edit(t, &["metadata", "annotations"], vec![("k", s("v"))]);
        assert_eq!(
            got,
            "metadata: {labels: {app: cart}, annotations: {a: b, \"k\": \"v\"}}\n"
        );
        let got = edit(t, &["metadata", "labels"], vec![]);
        assert_eq!(got, t);
        let t = "{\n  \"metadata\": {\n    \"labels\": {\"app\": \"x\"}\n  }\n}\n";
        let got = edit(
            t,
            &["metadata"],
            vec![("annotations", m(vec![("k", s("v")), ("l", s("w"))]))],
        );
        assert_eq!(
            got,
            "{\n  \"metadata\": {\n    \"annotations\": {\n      \"k\": \"v\",\n      \"l\": \"w\"\n    },\n    \"labels\": {\"app\": \"x\"}\n  }\n}\n"
        );
        let t = "m: {}\n";
        assert_eq!(edit(t, &["m"], vec![("k", s("v"))]), "m: {\"k\": \"v\"}\n");
    }

    #[test]
    fn block_scalars_and_nested_values_end_where_their_text_ends() {
        let t = "a:\n  x: |\n    line\n\n  y:\n    - 1\n    - 2   # two\n\nb: 1\n";
        let got = edit(t, &["a"], vec![("z", s("v"))]);
        assert_eq!(
            got,
            "a:\n  x: |\n    line\n\n  y:\n    - 1\n    - 2   # two\n  z: \"v\"\n\nb: 1\n"
        );
    }

    #[test]
    fn quantities_compare_by_value_and_aliases_are_not_edited() {
        let t = "r:\n  cpu: 1000m\n  memory: 1Gi\n";
        let got = edit(
            t,
            &["r"],
            vec![
                ("cpu", Want::Qty("1".into())),
                ("memory", Want::Qty("2Gi".into())),
            ],
        );
        assert_eq!(got, "r:\n  cpu: 1000m\n  memory: \"2Gi\"\n");
        let t = "a: &a {x: 1}\nb: *a\nc:\n  <<: *a\n";
        let p = parse(t).unwrap();
        let mut ed = Editor::new(t, p.step);
        let b = p.roots[0].get("b").unwrap();
        assert!(ed.edit_map(b, &[("x".into(), s("2"))]).is_err());
        let c = p.roots[0].get("c").unwrap();
        assert!(ed.edit_map(c, &[("x".into(), s("2"))]).is_err());
        assert!(ed.is_empty());
    }

    #[test]
    fn syntax_errors_have_lines_and_bombs_are_refused() {
        let e = parse("a: 1\nb: [oops\n").unwrap_err();
        assert!((2..=3).contains(&e.line), "{e:?}");
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            bomb.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n", p = i - 1));
        }
        assert!(parse(&bomb).unwrap_err().message.contains("nodes"));
    }
}
