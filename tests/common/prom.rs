//! A real Prometheus (Debian's package) on 127.0.0.1, backfilled with synthetic
//! OpenMetrics by `promtool tsdb create-blocks-from openmetrics`.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const STEP: u64 = 300;
pub const MI: f64 = 1024.0 * 1024.0;

fn need(tool: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{tool}` not found: run `make test` (it installs Debian's prometheus package) \
         or `apt-get install prometheus`"
    );
}

pub struct Prometheus {
    child: Child,
    pub url: String,
}

impl Prometheus {
    /// Backfill `openmetrics` into `dir/data` and start Prometheus on a free port.
    pub fn start(dir: &Path, openmetrics: &str) -> Prometheus {
        need("promtool");
        need("prometheus");
        let input = dir.join("data.om");
        std::fs::write(&input, openmetrics).unwrap();
        let data = dir.join("data");
        let out = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
            .arg(&input)
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1h\n").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=60d")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        p.wait_ready();
        p
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("prometheus exited: {status:?}");
            }
            let ready = std::net::TcpStream::connect(self.url.trim_start_matches("http://"))
                .ok()
                .and_then(|mut s| {
                    use std::io::{Read, Write};
                    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                    s.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n").ok()?;
                    let mut buf = String::new();
                    s.read_to_string(&mut buf).ok()?;
                    Some(buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200"))
                })
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "prometheus not ready after 60s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One container of one pod: its CPU rate and working set at step `k`.
pub struct Container {
    pub name: &'static str,
    pub cpu: fn(u64) -> f64,
    pub mem: fn(u64) -> f64,
}

pub struct Pod {
    pub namespace: &'static str,
    pub name: String,
    /// First and last step (inclusive) the pod is alive.
    pub from: u64,
    pub to: u64,
    pub containers: Vec<Container>,
    /// Step from which kube-state-metrics reports the istio-proxy as OOMKilled.
    pub oom_from: Option<u64>,
}

/// OpenMetrics text for `pods`, step 0 at `start` (Unix seconds, multiple of STEP).
pub fn openmetrics(start: u64, pods: &[Pod]) -> String {
    let mut out = String::new();
    out.push_str("# TYPE container_cpu_usage_seconds counter\n");
    for p in pods {
        for c in &p.containers {
            let mut total = 0.0;
            for k in p.from..=p.to {
                let t = start + k * STEP;
                if k > p.from {
                    total += (c.cpu)(k) * STEP as f64;
                }
                let _ = writeln!(
                    out,
                    "container_cpu_usage_seconds_total{{namespace=\"{}\",pod=\"{}\",container=\"{}\"}} {total} {t}",
                    p.namespace, p.name, c.name
                );
            }
        }
    }
    out.push_str("# TYPE container_memory_working_set_bytes gauge\n");
    for p in pods {
        for c in &p.containers {
            for k in p.from..=p.to {
                let _ = writeln!(
                    out,
                    "container_memory_working_set_bytes{{namespace=\"{}\",pod=\"{}\",container=\"{}\"}} {} {}",
                    p.namespace, p.name, c.name, (c.mem)(k), start + k * STEP
                );
            }
        }
    }
    out.push_str("# TYPE kube_pod_container_status_last_terminated_reason gauge\n");
    for p in pods {
        if let Some(from) = p.oom_from {
            for k in from..=p.to {
                let _ = writeln!(
                    out,
                    "kube_pod_container_status_last_terminated_reason{{namespace=\"{}\",pod=\"{}\",container=\"istio-proxy\",reason=\"OOMKilled\"}} 1 {}",
                    p.namespace, p.name, start + k * STEP
                );
            }
        }
    }
    out.push_str("# EOF\n");
    out
}
