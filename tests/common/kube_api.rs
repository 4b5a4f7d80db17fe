//! A test double of the Kubernetes API at the HTTP level (plain HTTP on 127.0.0.1:0), for
//! the cluster sources: collections of the core group (`/api/v1/<resource>`, key
//! `"<resource>"`) and of other groups (`/apis/<group>/<version>/<resource>`, key
//! `"<group>/<version>/<resource>"`), cluster-wide and per namespace
//! (`.../namespaces/<ns>/<resource>`), with list (resourceVersion, `limit`/`continue`
//! pagination, `labelSelector=k=v,...` and `k` for existence), get, create (POST; 409
//! AlreadyExists), replace (PUT; 409 Conflict when the body's resourceVersion is not the
//! current one, as the apiserver's optimistic concurrency does) and
//! watch (`?watch=true&resourceVersion=N`: newline-delimited JSON events ADDED, MODIFIED,
//! DELETED, BOOKMARK, and ERROR 410 once the history before a watch's resourceVersion is
//! compacted away, as the real apiserver does).
//!
//! One global resourceVersion counter, like etcd's revision. Every change is recorded as a
//! watch event; a watch replays the events after its resourceVersion, then follows new
//! ones. One-shot faults (an HTTP status, a dropped connection, a stall until released) are
//! injected per resource and verb. Every request line is logged.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    List,
    Watch,
    Get,
    Create,
    Replace,
    /// A list request that carries a `continue` token (a later page); for faults and
    /// `requests_of` only: such a request is also a `List`.
    Continue,
}

impl Verb {
    /// Does a request parsed as `p` count as `self`?
    fn covers(self, p: &Parsed) -> bool {
        self == p.verb
            || (self == Verb::Continue
                && p.verb == Verb::List
                && param(&p.query, "continue").is_some())
    }
}

/// What the next matching request gets instead of (or before) its normal answer.
#[derive(Clone)]
pub enum Fault {
    /// An error answer with this HTTP status and a Status body.
    Status(u16),
    /// The connection is closed without an answer.
    Drop,
    /// The answer is held until the Notify is notified, then served normally.
    Stall(Arc<Notify>),
    /// HTTP 200 with this body instead of the answer (garbage).
    Body(String),
}

struct Collection {
    kind: String,
    api_version: String,
    /// (namespace, name) → object.
    objects: BTreeMap<(String, String), Value>,
    /// (resourceVersion, type, object), oldest first.
    events: Vec<(u64, &'static str, Value)>,
    /// Watches from a resourceVersion below this get ERROR 410 (history compacted).
    gone_below: u64,
}

struct State {
    rv: u64,
    collections: BTreeMap<String, Collection>,
    requests: Vec<String>,
    faults: VecDeque<(String, Verb, Fault)>,
    /// (resource, namespace or None for cluster-wide): lists answer 403 Forbidden.
    forbidden: Vec<(String, Option<String>)>,
    /// List pages never hold more than this, whatever `limit` asks (the apiserver may
    /// return fewer items than `limit`; clients must follow `continue`).
    page_cap: usize,
    /// continue token → (list resourceVersion, the rest of the list).
    pages: HashMap<String, (u64, Vec<Value>)>,
    next_token: u64,
    /// Bumped to close every open watch (a dropped connection, no event).
    drops: u64,
    /// resource → highest resourceVersion written to a watch connection.
    delivered: HashMap<String, u64>,
}

pub struct KubeApi {
    pub url: String,
    state: Arc<Mutex<State>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl KubeApi {
    /// Serve `resources` (plural name → kind, e.g. `("limitranges", "LimitRange")`).
    pub async fn start(resources: &[(&str, &str)]) -> KubeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let collections = resources
            .iter()
            .map(|(key, kind)| {
                let api_version = match key.rsplit_once('/') {
                    Some((gv, _)) => gv.to_string(),
                    None => "v1".to_string(),
                };
                (
                    key.to_string(),
                    Collection {
                        kind: kind.to_string(),
                        api_version,
                        objects: BTreeMap::new(),
                        events: Vec::new(),
                        gone_below: 0,
                    },
                )
            })
            .collect();
        let state = Arc::new(Mutex::new(State {
            rv: 1,
            collections,
            requests: Vec::new(),
            faults: VecDeque::new(),
            forbidden: Vec::new(),
            page_cap: usize::MAX,
            pages: HashMap::new(),
            next_token: 0,
            drops: 0,
            delivered: HashMap::new(),
        }));
        let (changed, _) = tokio::sync::watch::channel(0u64);
        let (st, ch) = (state.clone(), changed.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, st.clone(), ch.clone()));
            }
        });
        KubeApi {
            url,
            state,
            changed,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = f(&mut self.state.lock().unwrap());
        self.changed.send_modify(|v| *v += 1);
        out
    }

    /// List pages hold at most `n` items.
    pub fn set_page_cap(&self, n: usize) {
        self.with(|s| s.page_cap = n.max(1));
    }

    /// The current resourceVersion (of the last change).
    pub fn rv(&self) -> u64 {
        self.state.lock().unwrap().rv
    }

    /// Create or replace an object (`metadata.namespace`/`name` identify it); a watch
    /// sees ADDED or MODIFIED. Returns its new resourceVersion.
    pub fn apply(&self, resource: &str, object: Value) -> u64 {
        self.with(|s| s.put(resource, object, true))
    }

    /// Create or replace several objects at once (no reader sees half of them).
    pub fn apply_all(&self, resource: &str, objects: Vec<Value>) -> u64 {
        self.with(|s| {
            let mut rv = 0;
            for o in objects {
                rv = s.put(resource, o, true);
            }
            rv
        })
    }

    /// Change an object WITHOUT a watch event, as if its event had been compacted away:
    /// only a (re-)list shows it. Pair with [`KubeApi::expire`].
    pub fn apply_unwatched(&self, resource: &str, object: Value) -> u64 {
        self.with(|s| s.put(resource, object, false))
    }

    /// Delete an object; a watch sees DELETED with its last state.
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) -> u64 {
        self.with(|s| s.remove(resource, namespace, name, true))
    }

    /// Delete an object without a watch event (see [`KubeApi::apply_unwatched`]).
    pub fn delete_unwatched(&self, resource: &str, namespace: &str, name: &str) -> u64 {
        self.with(|s| s.remove(resource, namespace, name, false))
    }

    /// A BOOKMARK at a new resourceVersion (as if something else in the cluster changed).
    pub fn bookmark(&self, resource: &str) -> u64 {
        self.with(|s| {
            s.rv += 1;
            let rv = s.rv;
            let c = s.collection(resource);
            let object = json!({"apiVersion": c.api_version, "kind": c.kind,
                "metadata": {"resourceVersion": rv.to_string()}});
            c.events.push((rv, "BOOKMARK", object));
            rv
        })
    }

    /// Compact the history: every open watch of `resource` gets an ERROR event with code
    /// 410 (Expired) and is closed; watches from an older resourceVersion get the same.
    pub fn expire(&self, resource: &str) {
        self.with(|s| {
            s.rv += 1;
            let rv = s.rv;
            s.collection(resource).gone_below = rv;
        });
    }

    /// Close every open watch without an event (a dropped connection).
    pub fn drop_watches(&self) {
        self.with(|s| s.drops += 1);
    }

    /// The next `verb` request on `resource` gets `fault` (faults queue up in order).
    pub fn fault(&self, resource: &str, verb: Verb, fault: Fault) {
        self.with(|s| s.faults.push_back((resource.to_string(), verb, fault)));
    }

    /// Forget every queued fault.
    /// Lists of `resource` in `namespace` (None: cluster-wide) answer 403 Forbidden, as
    /// when RBAC does not allow them.
    pub fn forbid(&self, resource: &str, namespace: Option<&str>) {
        self.with(|s| {
            s.forbidden
                .push((resource.to_string(), namespace.map(str::to_string)))
        });
    }

    pub fn clear_faults(&self) {
        self.with(|s| s.faults.clear());
    }

    /// Wait (bounded) until a watch of `resource` has been sent the event at `rv`: a
    /// client reads it before it notices a later disconnect.
    pub async fn wait_delivered(&self, resource: &str, rv: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let d = self.state.lock().unwrap().delivered.get(resource).copied();
            if d >= Some(rv) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{resource}: rv {rv} never delivered (last {d:?})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Request lines received so far ("GET /api/v1/...?... HTTP/1.1").
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests on `resource` with `verb`.
    pub fn requests_of(&self, resource: &str, verb: Verb) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| parse_request(r).is_some_and(|p| p.resource == resource && verb.covers(&p)))
            .collect()
    }

    /// The current object, if any.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let s = self.state.lock().unwrap();
        s.collections
            .get(resource)?
            .objects
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every object of `resource`.
    pub fn objects(&self, resource: &str) -> Vec<Value> {
        let s = self.state.lock().unwrap();
        s.collections
            .get(resource)
            .map(|c| c.objects.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Wait (bounded) until `f` holds for the request log; returns the log.
    pub async fn wait_requests(&self, what: &str, f: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.requests();
            if f(&r) {
                return r;
            }
            assert!(Instant::now() < deadline, "never saw {what}: {r:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl State {
    fn collection(&mut self, resource: &str) -> &mut Collection {
        self.collections
            .get_mut(resource)
            .unwrap_or_else(|| panic!("the double does not serve {resource}"))
    }

    fn put(&mut self, resource: &str, mut object: Value, event: bool) -> u64 {
        self.rv += 1;
        let rv = self.rv;
        let c = self.collection(resource);
        let key = key_of(&object);
        object["apiVersion"] = json!(c.api_version);
        object["kind"] = json!(c.kind);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let kind = if c.objects.insert(key, object.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        if event {
            c.events.push((rv, kind, object));
        }
        rv
    }

    fn remove(&mut self, resource: &str, namespace: &str, name: &str, event: bool) -> u64 {
        self.rv += 1;
        let rv = self.rv;
        let c = self.collection(resource);
        let mut object = c
            .objects
            .remove(&(namespace.to_string(), name.to_string()))
            .unwrap_or_else(|| panic!("{resource} {namespace}/{name} does not exist"));
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if event {
            c.events.push((rv, "DELETED", object));
        }
        rv
    }
}

fn key_of(object: &Value) -> (String, String) {
    let m = &object["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_string(),
        m["name"].as_str().expect("metadata.name").to_string(),
    )
}

/// The `resourceVersion` parameter of a logged request line.
pub fn resource_version(request: &str) -> Option<u64> {
    param(&target(request).1, "resourceVersion")?.parse().ok()
}

/// Path and query of a request line.
fn target(line: &str) -> (String, String) {
    let t = line.split(' ').nth(1).unwrap_or_default();
    match t.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (t.to_string(), String::new()),
    }
}

fn param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn matches_selector(object: &Value, selector: Option<&str>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    sel.split(',').all(|term| match term.split_once('=') {
        Some((k, v)) => object["metadata"]["labels"][k].as_str() == Some(v),
        None => !object["metadata"]["labels"][term].is_null(),
    })
}

/// Read one request head; returns its first line.
pub async fn read_head(sock: &mut TcpStream) -> Option<String> {
    read_request(sock).await.map(|(line, _)| line)
}

/// Read one request: its first line and its body (by `content-length`).
pub async fn read_request(sock: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut b).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let line = head.lines().next()?.to_string();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = sock.read(&mut b).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&b[..n]);
    }
    Some((line, body))
}

/// What a request line asks for.
struct Parsed {
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    verb: Verb,
    query: String,
}

fn parse_request(line: &str) -> Option<Parsed> {
    let method = line.split(' ').next().unwrap_or_default();
    let (path, query) = target(line);
    let (group, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
        (None, rest.to_string())
    } else {
        let rest = path.strip_prefix("/apis/")?;
        let mut parts = rest.splitn(3, '/');
        let g = parts.next()?;
        let v = parts.next()?;
        (
            Some(format!("{g}/{v}")),
            parts.next().unwrap_or_default().to_string(),
        )
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (namespace, plural, name) = match segs.as_slice() {
        [plural] => (None, *plural, None),
        ["namespaces", name] => (None, "namespaces", Some(*name)),
        [plural, name] => (None, *plural, Some(*name)),
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        _ => return None,
    };
    let resource = match group {
        Some(gv) => format!("{gv}/{plural}"),
        None => plural.to_string(),
    };
    let watch = param(&query, "watch").as_deref() == Some("true");
    let verb = match (method, name.is_some(), watch) {
        ("POST", _, _) => Verb::Create,
        ("PUT", _, _) => Verb::Replace,
        (_, _, true) => Verb::Watch,
        (_, true, _) => Verb::Get,
        _ => Verb::List,
    };
    Some(Parsed {
        resource,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        verb,
        query,
    })
}

/// Write one newline-terminated JSON value as an HTTP chunk.
pub async fn chunk(sock: &mut TcpStream, v: &Value) -> bool {
    let line = format!("{v}\n");
    let c = format!("{:x}\r\n{line}\r\n", line.len());
    sock.write_all(c.as_bytes()).await.is_ok()
}

async fn respond(mut sock: TcpStream, status: u16, body: &Value) {
    let body = body.to_string();
    let reason = match status {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        201 => "Created",
        409 => "Conflict",
        410 => "Gone",
        500 => "Internal Server Error",
        _ => "Error",
    };
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

async fn serve(
    mut sock: TcpStream,
    state: Arc<Mutex<State>>,
    changed: tokio::sync::watch::Sender<u64>,
) {
    let Some((line, body)) = read_request(&mut sock).await else {
        return;
    };
    let parsed = parse_request(&line);
    let fault = {
        let mut s = state.lock().unwrap();
        s.requests.push(line.clone());
        let i = parsed.as_ref().and_then(|p| {
            s.faults
                .iter()
                .position(|(r, v, _)| *r == p.resource && v.covers(p))
        });
        i.and_then(|i| s.faults.remove(i)).map(|(_, _, f)| f)
    };
    match fault {
        Some(Fault::Status(code)) => {
            return respond(
                sock,
                code,
                &status_body(code, "InternalError", "injected fault"),
            )
            .await
        }
        Some(Fault::Drop) => return,
        Some(Fault::Stall(release)) => release.notified().await,
        Some(Fault::Body(text)) => {
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{text}",
                text.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
            return;
        }
        None => {}
    }
    let Some(p) = parsed.filter(|p| state.lock().unwrap().collections.contains_key(&p.resource))
    else {
        return respond(sock, 404, &status_body(404, "NotFound", "no such resource")).await;
    };
    let denied = p.verb == Verb::List
        && state
            .lock()
            .unwrap()
            .forbidden
            .iter()
            .any(|(r, ns)| *r == p.resource && *ns == p.namespace);
    if denied {
        let scope = p
            .namespace
            .as_deref()
            .map_or("at the cluster scope".to_string(), |n| {
                format!("in the namespace {n:?}")
            });
        let msg = format!(
            "{} is forbidden: cannot list resource {:?} {scope}",
            p.resource, p.resource
        );
        return respond(sock, 403, &status_body(403, "Forbidden", &msg)).await;
    }
    let selector = param(&p.query, "labelSelector");
    match p.verb {
        Verb::Watch => {
            let from = param(&p.query, "resourceVersion")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            stream_watch(
                sock,
                state,
                changed,
                p.resource,
                p.namespace,
                from,
                selector,
            )
            .await;
        }
        Verb::List | Verb::Continue => {
            let body = list(
                &state,
                &p.resource,
                p.namespace.as_deref(),
                &p.query,
                selector.as_deref(),
            );
            respond(sock, 200, &body).await;
        }
        Verb::Get => {
            let key = (
                p.namespace.clone().unwrap_or_default(),
                p.name.clone().unwrap_or_default(),
            );
            let found = state.lock().unwrap().collections[&p.resource]
                .objects
                .get(&key)
                .cloned();
            match found {
                Some(o) => respond(sock, 200, &o).await,
                None => respond(sock, 404, &status_body(404, "NotFound", "not found")).await,
            }
        }
        Verb::Create | Verb::Replace => {
            let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
                return respond(sock, 400, &status_body(400, "BadRequest", "not JSON")).await;
            };
            if let Some(ns) = &p.namespace {
                object["metadata"]["namespace"] = json!(ns);
            }
            let answer = {
                let mut s = state.lock().unwrap();
                let key = key_of(&object);
                let current = s.collections[&p.resource].objects.get(&key).map(|o| {
                    o["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                });
                let sent = object["metadata"]["resourceVersion"]
                    .as_str()
                    .map(str::to_string);
                match (p.verb, current, sent) {
                    (Verb::Create, Some(_), _) => Err((409, "AlreadyExists")),
                    (Verb::Replace, None, _) => Err((404, "NotFound")),
                    (Verb::Replace, Some(cur), Some(sent)) if cur != sent => Err((409, "Conflict")),
                    _ => {
                        if let Some(m) = object["metadata"].as_object_mut() {
                            m.remove("resourceVersion");
                        }
                        s.put(&p.resource, object, true);
                        Ok(s.collections[&p.resource].objects[&key].clone())
                    }
                }
            };
            changed.send_modify(|v| *v += 1);
            match answer {
                Ok(o) => respond(sock, if p.verb == Verb::Create { 201 } else { 200 }, &o).await,
                Err((code, reason)) => {
                    let msg = format!("the object has been modified or exists ({reason})");
                    respond(sock, code, &status_body(code, reason, &msg)).await
                }
            }
        }
    }
}

fn list(
    state: &Mutex<State>,
    resource: &str,
    namespace: Option<&str>,
    query: &str,
    selector: Option<&str>,
) -> Value {
    let mut s = state.lock().unwrap();
    let (rv, mut rest) = match param(query, "continue").and_then(|t| s.pages.remove(&t)) {
        Some(page) => page,
        None => {
            let rv = s.rv;
            let items: Vec<Value> = s.collections[resource]
                .objects
                .values()
                .filter(|o| matches_selector(o, selector) && in_namespace(o, namespace))
                .cloned()
                .collect();
            (rv, items)
        }
    };
    let limit = param(query, "limit").and_then(|l| l.parse::<usize>().ok());
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(limit) = limit.filter(|l| *l > 0) {
        let n = limit.min(s.page_cap);
        if rest.len() > n {
            let more = rest.split_off(n);
            s.next_token += 1;
            let token = format!("page-{}", s.next_token);
            s.pages.insert(token.clone(), (rv, more));
            meta["continue"] = json!(token);
        }
    }
    let c = &s.collections[resource];
    let kind = format!("{}List", c.kind);
    json!({"apiVersion": c.api_version, "kind": kind, "metadata": meta, "items": rest})
}

fn in_namespace(object: &Value, namespace: Option<&str>) -> bool {
    namespace.is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns))
}

async fn stream_watch(
    mut sock: TcpStream,
    state: Arc<Mutex<State>>,
    changed: tokio::sync::watch::Sender<u64>,
    resource: String,
    namespace: Option<String>,
    mut cursor: u64,
    selector: Option<String>,
) {
    let mut rx = changed.subscribe();
    let drops = state.lock().unwrap().drops;
    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n";
    if sock.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    loop {
        rx.borrow_and_update();
        let (events, gone) = {
            let s = state.lock().unwrap();
            if s.drops != drops {
                return;
            }
            let c = &s.collections[&resource];
            if cursor < c.gone_below {
                (Vec::new(), true)
            } else {
                let events: Vec<(u64, &'static str, Value)> = c
                    .events
                    .iter()
                    .filter(|(rv, t, o)| {
                        *rv > cursor
                            && (*t == "BOOKMARK"
                                || (matches_selector(o, selector.as_deref())
                                    && in_namespace(o, namespace.as_deref())))
                    })
                    .cloned()
                    .collect();
                (events, false)
            }
        };
        if gone {
            let msg = format!("too old resource version: {cursor}");
            let _ = chunk(
                &mut sock,
                &json!({"type": "ERROR", "object": status_body(410, "Expired", &msg)}),
            )
            .await;
            let _ = sock.write_all(b"0\r\n\r\n").await;
            return;
        }
        for (rv, t, object) in events {
            if !chunk(&mut sock, &json!({"type": t, "object": object})).await {
                return;
            }
            cursor = rv;
            let mut s = state.lock().unwrap();
            let d = s.delivered.entry(resource.clone()).or_default();
            *d = (*d).max(rv);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
