//! A test double of the Kubernetes API at the HTTP level (plain HTTP on 127.0.0.1:0), for
//! the cluster sources and `report`: collections of the core group (`/api/v1/<resource>`,
//! key `<resource>`) and of named groups (`/apis/<group>/<version>/<resource>`, key
//! `<group>/<version>/<resource>`), cluster-wide or per namespace
//! (`.../namespaces/<ns>/<resource>`), `GET /api/v1/namespaces/<name>`, with list (resourceVersion, `limit`/`continue` pagination, `labelSelector=k=v,...`) and
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
    /// Any list request (first page or a continuation).
    List,
    /// Only list requests that carry a `continue` token.
    Continue,
    Watch,
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
}

struct Collection {
    kind: String,
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
    /// (resource, namespace) pairs answered 403 Forbidden; namespace `None` = the
    /// cluster-wide list.
    forbidden: Vec<(String, Option<String>)>,
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
            .map(|(plural, kind)| {
                (
                    plural.to_string(),
                    Collection {
                        kind: kind.to_string(),
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
            page_cap: usize::MAX,
            pages: HashMap::new(),
            next_token: 0,
            drops: 0,
            delivered: HashMap::new(),
            forbidden: Vec::new(),
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
            let object = json!({"apiVersion": api_version(resource), "kind": c.kind,
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

    /// Answer 403 Forbidden to lists of `resource` in `namespace` (`None`: across all
    /// namespaces), as RBAC does for a subject without that permission.
    pub fn forbid(&self, resource: &str, namespace: Option<&str>) {
        self.with(|s| {
            s.forbidden
                .push((resource.to_string(), namespace.map(str::to_string)))
        });
    }

    /// The next `verb` request on `resource` gets `fault` (faults queue up in order).
    pub fn fault(&self, resource: &str, verb: Verb, fault: Fault) {
        self.with(|s| s.faults.push_back((resource.to_string(), verb, fault)));
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
            .filter(|r| {
                let (path, query) = target(r);
                let Some(route) = route(&path) else {
                    return false;
                };
                route.resource == resource
                    && match verb {
                        Verb::Watch => param(&query, "watch").as_deref() == Some("true"),
                        Verb::List => param(&query, "watch").as_deref() != Some("true"),
                        Verb::Continue => param(&query, "continue").is_some(),
                    }
            })
            .collect()
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
        object["apiVersion"] = json!(api_version(resource));
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

/// `v1` for the core group, `<group>/<version>` for a key `<group>/<version>/<resource>`.
fn api_version(resource: &str) -> String {
    match resource.rsplit_once('/') {
        Some((gv, _)) => gv.to_string(),
        None => "v1".to_string(),
    }
}

/// What a request path asks for.
struct Route {
    /// Collection key: `pods`, `apps/v1/replicasets`, ...
    resource: String,
    /// `.../namespaces/<ns>/<resource>`: only that namespace.
    namespace: Option<String>,
    /// `GET /api/v1/namespaces/<name>`: one namespace object.
    get: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let (prefix, rest) = if let Some(r) = path.strip_prefix("/api/v1/") {
        (String::new(), r)
    } else {
        let r = path.strip_prefix("/apis/")?;
        let mut it = r.splitn(3, '/');
        let (g, v, rest) = (it.next()?, it.next()?, it.next()?);
        (format!("{g}/{v}/"), rest)
    };
    let seg: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    Some(match seg.as_slice() {
        [res] => Route {
            resource: format!("{prefix}{res}"),
            namespace: None,
            get: None,
        },
        ["namespaces", name] if prefix.is_empty() => Route {
            resource: "namespaces".into(),
            namespace: None,
            get: Some(name.to_string()),
        },
        ["namespaces", ns, res] => Route {
            resource: format!("{prefix}{res}"),
            namespace: Some(ns.to_string()),
            get: None,
        },
        _ => return None,
    })
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
        None => false,
    })
}

/// Read one request head; returns its first line.
pub async fn read_head(sock: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let n = sock.read(&mut b).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(String::from_utf8_lossy(&buf).lines().next()?.to_string());
        }
    }
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
        404 => "Not Found",
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
    let Some(line) = read_head(&mut sock).await else {
        return;
    };
    let (path, query) = target(&line);
    let watch = param(&query, "watch").as_deref() == Some("true");
    let continued = param(&query, "continue").is_some();
    let Some(route) = route(&path) else {
        state.lock().unwrap().requests.push(line.clone());
        return respond(sock, 404, &status_body(404, "NotFound", "no such path")).await;
    };
    let resource = route.resource.clone();
    let fault = {
        let mut s = state.lock().unwrap();
        s.requests.push(line.clone());
        let i = s.faults.iter().position(|(r, v, _)| {
            *r == resource
                && match v {
                    Verb::Watch => watch,
                    Verb::List => !watch,
                    Verb::Continue => !watch && continued,
                }
        });
        i.and_then(|i| s.faults.remove(i)).map(|(_, _, f)| f)
    };
    match fault {
        Some(Fault::Status(code)) => {
            let reason = match code {
                410 => "Expired",
                403 => "Forbidden",
                _ => "InternalError",
            };
            return respond(sock, code, &status_body(code, reason, "injected fault")).await;
        }
        Some(Fault::Drop) => return,
        Some(Fault::Stall(release)) => release.notified().await,
        None => {}
    }
    if !state.lock().unwrap().collections.contains_key(&resource) {
        return respond(sock, 404, &status_body(404, "NotFound", "no such resource")).await;
    }
    let denied = state
        .lock()
        .unwrap()
        .forbidden
        .iter()
        .any(|(r, ns)| *r == resource && *ns == route.namespace && route.get.is_none());
    if denied {
        let msg = format!(
            "{resource} is forbidden: cannot list resource {resource:?} {}",
            route
                .namespace
                .as_deref()
                .map_or("at the cluster scope".to_string(), |n| format!(
                    "in the namespace {n:?}"
                ))
        );
        return respond(sock, 403, &status_body(403, "Forbidden", &msg)).await;
    }
    if let Some(name) = &route.get {
        let object = state.lock().unwrap().collections[&resource]
            .objects
            .get(&(String::new(), name.clone()))
            .cloned();
        return match object {
            Some(o) => respond(sock, 200, &o).await,
            None => respond(sock, 404, &status_body(404, "NotFound", "not found")).await,
        };
    }
    let selector = param(&query, "labelSelector");
    if watch {
        let from = param(&query, "resourceVersion")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        stream_watch(sock, state, changed, resource, from, selector).await;
    } else {
        let body = list(
            &state,
            &resource,
            route.namespace.as_deref(),
            &query,
            selector.as_deref(),
        );
        respond(sock, 200, &body).await;
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
                .filter(|o| namespace.is_none_or(|ns| o["metadata"]["namespace"] == ns))
                .filter(|o| matches_selector(o, selector))
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
    let kind = format!("{}List", s.collections[resource].kind);
    json!({"apiVersion": api_version(resource), "kind": kind, "metadata": meta, "items": rest})
}

async fn stream_watch(
    mut sock: TcpStream,
    state: Arc<Mutex<State>>,
    changed: tokio::sync::watch::Sender<u64>,
    resource: String,
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
                            && (*t == "BOOKMARK" || matches_selector(o, selector.as_deref()))
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
