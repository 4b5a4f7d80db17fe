//! `--cluster-constraints` against a test double of the Kubernetes API at the HTTP level
//! (tests/common/kube_api.rs): the paginated initial list over several namespaces, watch
//! events, a BOOKMARK and a resume after a disconnect, `410 Gone` → re-list, failing
//! watches and lists (last good snapshot kept, retried, counted), and a stalled API that
//! never delays an admission.

mod common;

use common::kube_api::{resource_version, Fault, KubeApi, Verb};
use common::*;
use serde_json::{json, Value};
use sidecar_sizer::sources::kube::KubeSource;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const LR: &str = "limitranges";
const RQ: &str = "resourcequotas";

fn limit_range(ns: &str, name: &str, max_cpu: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"limits": [{"type": "Container", "max": {"cpu": max_cpu}}]}
    })
}

fn quota(ns: &str, name: &str, hard_cpu: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"hard": {"requests.cpu": hard_cpu}},
        "status": {"hard": {"requests.cpu": hard_cpu}, "used": {"requests.cpu": "0"}}
    })
}

/// Limit ranges and quotas served at the start, deliberately not in name order.
async fn seeded_api() -> KubeApi {
    let api = KubeApi::start(&[(LR, "LimitRange"), (RQ, "ResourceQuota")]).await;
    api.set_page_cap(2);
    for (ns, name, cpu) in [
        ("shop", "z-defaults", "2"),
        ("pay", "limits", "1"),
        ("shop", "a-ceiling", "4"),
        ("search", "lr", "8"),
        ("pay", "extra", "3"),
    ] {
        api.apply(LR, limit_range(ns, name, cpu));
    }
    for (ns, name, cpu) in [
        ("shop", "compute", "10"),
        ("pay", "compute", "5"),
        ("pay", "burst", "20"),
    ] {
        api.apply(RQ, quota(ns, name, cpu));
    }
    api
}

type View = BTreeMap<String, (Vec<String>, Vec<String>)>;

/// What the seeded API holds, as [`view`] shows it.
fn seeded_view() -> View {
    view_of(&[
        ("pay", &["extra:3", "limits:1"], &["burst:20", "compute:5"]),
        ("search", &["lr:8"], &[]),
        ("shop", &["a-ceiling:4", "z-defaults:2"], &["compute:10"]),
    ])
}

fn view_of(rows: &[(&str, &[&str], &[&str])]) -> View {
    rows.iter()
        .map(|(ns, lrs, rqs)| {
            let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
            (ns.to_string(), (strings(lrs), strings(rqs)))
        })
        .collect()
}

/// The snapshot the request path reads, reduced to namespace → (limit ranges
/// "name:max cpu", quotas "name:hard requests.cpu") in the snapshot's own order.
fn view(server: &TestServer) -> (bool, View) {
    let snap = server.shared().cluster.load();
    let v = snap
        .by_namespace
        .iter()
        .map(|(ns, c)| {
            let lrs = c
                .limit_ranges
                .iter()
                .map(|lr| {
                    let cpu = lr
                        .spec
                        .as_ref()
                        .and_then(|s| s.limits.first())
                        .and_then(|l| l.max.as_ref())
                        .and_then(|m| m.get("cpu"))
                        .map_or("-".to_string(), |q| q.0.clone());
                    format!("{}:{cpu}", lr.metadata.name.as_deref().unwrap_or(""))
                })
                .collect();
            let rqs = c
                .quotas
                .iter()
                .map(|q| {
                    let cpu = q
                        .spec
                        .as_ref()
                        .and_then(|s| s.hard.as_ref())
                        .and_then(|h| h.get("requests.cpu"))
                        .map_or("-".to_string(), |q| q.0.clone());
                    format!("{}:{cpu}", q.metadata.name.as_deref().unwrap_or(""))
                })
                .collect();
            (ns.clone(), (lrs, rqs))
        })
        .collect();
    (snap.synced, v)
}

/// Poll (bounded) until the snapshot shows `want`.
async fn wait_view(server: &TestServer, what: &str, want: &View) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (synced, got) = view(server);
        if synced && got == *want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: snapshot never became {want:#?}; last (synced {synced}) {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `sidecar_sizer_reload_failures_total{kind=...}`.
async fn failures(server: &TestServer, kind: &str) -> u64 {
    let m = server.metrics().await;
    let key = format!("sidecar_sizer_reload_failures_total{{kind=\"{kind}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |v| v.trim().parse().unwrap())
}

async fn wait_failures(server: &TestServer, kind: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = failures(server, kind).await;
        if n >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{kind}: {n} failures counted, expected {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn start(api: &KubeApi, sync_timeout: Duration) -> TestServer {
    TestServer::start(Opts {
        cluster_constraints: Some(KubeSource::Url(api.url.clone())),
        sync_timeout,
        ..Opts::default()
    })
    .await
}

/// A review is answered (allowed) within a second.
async fn answered_promptly(server: &TestServer) {
    let t = Instant::now();
    let body = mutate(server, &fixture("review-deployment-pod.json")).await;
    let took = t.elapsed();
    assert_eq!(body["response"]["allowed"], true, "{body}");
    assert!(took < Duration::from_secs(1), "review took {took:?}");
}

fn has(r: &str, part: &str) -> bool {
    r.contains(part)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paginated_list_then_watch_events_bookmark_and_resume() {
    let api = seeded_api().await;
    let server = start(&api, Duration::from_secs(10)).await;
    // Listed (every page of both kinds) before start returned and turned ready: no polling.
    assert_eq!(view(&server), (true, seeded_view()));
    let ready = reqwest::get(format!("{}/readyz", server.health))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let lr_lists = api.requests_of(LR, Verb::List);
    assert_eq!(
        lr_lists.len(),
        3,
        "5 limit ranges, pages of 2: {lr_lists:#?}"
    );
    assert!(has(&lr_lists[0], "limit=") && !has(&lr_lists[0], "continue="));
    assert!(lr_lists[1..].iter().all(|r| has(r, "continue=page-")));
    assert_eq!(api.requests_of(RQ, Verb::List).len(), 2);

    // ADDED in a new namespace, MODIFIED, DELETED.
    api.apply(LR, limit_range("billing", "lr", "2"));
    let mut want = seeded_view();
    want.insert("billing".into(), (vec!["lr:2".into()], vec![]));
    wait_view(&server, "ADDED", &want).await;
    api.apply(RQ, quota("shop", "compute", "12"));
    want.get_mut("shop").unwrap().1 = vec!["compute:12".into()];
    wait_view(&server, "MODIFIED", &want).await;
    api.delete(LR, "pay", "extra");
    want.get_mut("pay").unwrap().0 = vec!["limits:1".into()];
    wait_view(&server, "DELETED", &want).await;
    api.delete(RQ, "pay", "burst");
    api.delete(RQ, "pay", "compute");
    api.delete(LR, "pay", "limits");
    want.remove("pay");
    wait_view(&server, "a namespace's last objects DELETED", &want).await;

    // A BOOKMARK moves the resume point without changing the snapshot; after a dropped
    // connection the watch resumes from it instead of re-listing.
    let watches_before = api.requests_of(LR, Verb::Watch).len();
    let rv = api.bookmark(LR);
    api.wait_delivered(LR, rv).await;
    api.drop_watches();
    let requests = api
        .wait_requests("the limitranges watch resumed", |_| {
            api.requests_of(LR, Verb::Watch).len() > watches_before
        })
        .await;
    let watch = api.requests_of(LR, Verb::Watch)[watches_before].clone();
    assert_eq!(
        resource_version(&watch),
        Some(rv),
        "resumed from the bookmark: {watch} ({requests:#?})"
    );
    api.apply(LR, limit_range("billing", "lr", "3"));
    want.get_mut("billing").unwrap().0 = vec!["lr:3".into()];
    wait_view(&server, "an event after the resume", &want).await;
    assert_eq!(api.requests_of(LR, Verb::List).len(), 3, "not re-listed");
    assert_eq!(api.requests_of(RQ, Verb::List).len(), 2, "not re-listed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_makes_the_reflector_relist() {
    let api = seeded_api().await;
    let server = start(&api, Duration::from_secs(10)).await;
    assert_eq!(view(&server), (true, seeded_view()));
    let (lr_lists, rq_lists) = (
        api.requests_of(LR, Verb::List).len(),
        api.requests_of(RQ, Verb::List).len(),
    );
    // Changes whose events are compacted away: only a re-list can show them.
    api.apply_unwatched(LR, limit_range("shop", "quiet", "7"));
    api.delete_unwatched(LR, "pay", "limits");
    api.apply_unwatched(RQ, quota("pay", "compute", "9"));
    api.apply_unwatched(RQ, quota("new", "compute", "1"));
    // Both open watches get ERROR 410 (Expired), as the apiserver sends it.
    api.expire(LR);
    api.expire(RQ);
    let want = view_of(&[
        ("new", &[], &["compute:1"]),
        ("pay", &["extra:3"], &["burst:20", "compute:9"]),
        ("search", &["lr:8"], &[]),
        (
            "shop",
            &["a-ceiling:4", "quiet:7", "z-defaults:2"],
            &["compute:10"],
        ),
    ]);
    wait_view(&server, "re-listed after 410", &want).await;
    assert!(api.requests_of(LR, Verb::List).len() > lr_lists);
    assert!(api.requests_of(RQ, Verb::List).len() > rq_lists);
    assert!(failures(&server, LR).await >= 1, "the 410 is counted");
    assert!(failures(&server, RQ).await >= 1, "the 410 is counted");
    // And the watch goes on from the re-list.
    api.apply(RQ, quota("new", "compute", "2"));
    let mut want = want;
    want.get_mut("new").unwrap().1 = vec!["compute:2".into()];
    wait_view(&server, "an event after the re-list", &want).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_keep_the_last_good_snapshot_and_are_retried() {
    let api = seeded_api().await;
    let server = start(&api, Duration::from_secs(10)).await;
    let base = seeded_view();
    assert_eq!(view(&server), (true, base.clone()));

    // The watch drops; re-watching fails with a 500, then with a dropped connection.
    api.fault(LR, Verb::Watch, Fault::Status(500));
    api.fault(LR, Verb::Watch, Fault::Drop);
    api.drop_watches();
    wait_failures(&server, LR, 2).await;
    assert_eq!(view(&server), (true, base.clone()), "last good kept");
    // Retried with backoff: the next watch works and resumes where it was.
    api.apply(LR, limit_range("search", "lr", "6"));
    let mut want = base.clone();
    want.get_mut("search").unwrap().0 = vec!["lr:6".into()];
    wait_view(&server, "an event after the failed watches", &want).await;
    assert_eq!(
        api.requests_of(LR, Verb::List).len(),
        3,
        "resumed, not re-listed"
    );

    // A re-list (after 410) that fails with a 500, a dropped connection, then stalls:
    // the last good snapshot stays in force, whole (never empty, never half a list), and
    // admissions are answered meanwhile.
    let release = Arc::new(Notify::new());
    api.fault(RQ, Verb::List, Fault::Status(500));
    api.fault(RQ, Verb::List, Fault::Drop);
    api.fault(RQ, Verb::List, Fault::Stall(release.clone()));
    api.apply_unwatched(RQ, quota("shop", "compute", "11"));
    api.expire(RQ);
    wait_failures(&server, RQ, 3).await; // the 410, the 500, the drop
    api.wait_requests("the stalled quota list", |_| {
        api.requests_of(RQ, Verb::List).len() >= 2 + 3
    })
    .await;
    assert_eq!(view(&server), (true, want.clone()), "last good kept");
    answered_promptly(&server).await;
    // Meanwhile the other kind still follows its watch.
    api.apply(LR, limit_range("search", "lr", "5"));
    want.get_mut("search").unwrap().0 = vec!["lr:5".into()];
    wait_view(&server, "limit ranges during the quota outage", &want).await;
    release.notify_one();
    want.get_mut("shop").unwrap().1 = vec!["compute:11".into()];
    wait_view(&server, "quotas after the outage", &want).await;
    let m = server.metrics().await;
    assert!(
        m.contains("sidecar_sizer_reload_failures_total{kind=\"resourcequotas\"}"),
        "{m}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_first_list_neither_blocks_startup_nor_admissions() {
    let api = seeded_api().await;
    let release = Arc::new(Notify::new());
    api.fault(LR, Verb::List, Fault::Stall(release.clone()));
    let t = Instant::now();
    let server = start(&api, Duration::from_millis(800)).await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(5),
        "start waited {took:?} for the first list (timeout 800ms)"
    );
    // Ready anyway, sizing without constraints until listed.
    let (synced, v) = view(&server);
    assert!(!synced && v.is_empty(), "{v:?}");
    let ready = reqwest::get(format!("{}/readyz", server.health))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    answered_promptly(&server).await;
    assert!(!view(&server).0, "still stalled");
    release.notify_one();
    wait_view(&server, "listed after the stall", &seeded_view()).await;
    server.stop().await;
}
