#!/usr/bin/env python3
"""`make bench`: macro benchmarks of the release build, side by side with a baseline.

The sizer and the fixed-response baseline (benches/baseline.rs: same axum + rustls stack,
a precomputed answer) run pinned to CPU 0; oha runs pinned to CPU 1. For each payload:
closed-loop max throughput (HTTP/2 and HTTP/1.1) and open-loop latency at fixed rates with
latency correction. Then RSS after loading 1k/10k/50k workloads of history and the time a
warm restart takes to turn ready. Writes a markdown report to stdout and
target/bench-report.md. Environment: BENCH_SECONDS (8), BENCH_RATES ("1000 2000 5000").

The summary compares, for the typical pod, the open-loop p99 at 2,000/s and 5,000/s and
the max throughput (closed loop, HTTP/2) of the sizer with the fixed-response baseline, and
with the kube-rs admission example when one is available locally: set
KUBE_ADMISSION_EXAMPLE to a command line with {port}, {cert}, {key} placeholders (it must
serve POST /mutate over TLS on 127.0.0.1:{port}); without it that column says so.
"""
import json, os, pathlib, platform, shutil, socket, subprocess, sys, time, urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "target/bench"
BIN = ROOT / "target/release/sidecar-sizer"
BASELINE = ROOT / "target/release/examples/baseline"
SECS = int(os.environ.get("BENCH_SECONDS", "8"))
RATES = sorted({int(r) for r in os.environ.get("BENCH_RATES", "1000 2000 5000").split()} | {2000, 5000})
KUBE_EXAMPLE = os.environ.get("KUBE_ADMISSION_EXAMPLE", "").strip()
# Targets of issue 12 (typical pod): p99 at 2,000/s and 5,000/s, throughput vs baseline.
TARGET_P99 = {2000: 0.001, 5000: 0.002}
TARGET_RATIO = 0.5
PAYLOADS = os.environ.get("BENCH_PAYLOADS", "small typical large").split()
CPUS = os.cpu_count() or 1
SERVER_CPU, LOAD_CPU = ("0", "1") if CPUS >= 2 else ("0", "0")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pinned(cpu, cmd):
    return (["taskset", "-c", cpu] if shutil.which("taskset") else []) + cmd


def wait_ready(url, proc, timeout=60.0):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except Exception:
            time.sleep(0.005)
    raise SystemExit(f"{url} not ready after {timeout}s")


def wait_port(port, proc, timeout=30.0):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"baseline exited: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.01)
    raise SystemExit("baseline did not listen")


def write_store(path, n):
    """A history store with n workloads (3 containers each), plus shop/cart."""
    now = int(time.time())
    workloads = []
    for i in range(n):
        ns, wl = ("shop", "cart") if i == 0 else (f"team-{i % 200}", f"service-{i}")
        containers = {}
        for c, cpu, mem in [("istio-proxy", 0.212, 83886080), ("app", 0.41, 629145600), ("log-shipper", 0.02, 52428800)]:
            containers[c] = {"cpu_p95_cores": cpu, "memory_max_bytes": mem, "samples": 4032, "hours": 336.0, "oom_kills": 0}
        workloads.append({"namespace": ns, "workload": wl, "containers": containers, "avg_replicas": 3.0})
    doc = {"format": "sidecar-sizer-history", "version": 1,
           "meta": {"source": f"bench {n}", "fetched_at": now, "window_seconds": 1209600},
           "workloads": workloads}
    path.mkdir(parents=True, exist_ok=True)
    (path / "history.json").write_text(json.dumps(doc))


def start_sizer(state_dir, certs, env_extra=None):
    port, hport = free_port(), free_port()
    env = dict(os.environ, SIDECAR_SIZER_LOG="info", **(env_extra or {}))
    cmd = pinned(SERVER_CPU, [str(BIN), "serve", "--listen", f"127.0.0.1:{port}",
                              "--health-listen", f"127.0.0.1:{hport}",
                              "--tls-cert", str(certs / "tls.crt"), "--tls-key", str(certs / "tls.key"),
                              "--spec-dir", str(ROOT / "examples/specs"), "--state-dir", str(state_dir),
                              "--shutdown-delay", "0", "--max-inflight", "4096"])
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ready = wait_ready(f"http://127.0.0.1:{hport}/readyz", proc)
    return proc, port, hport, time.monotonic() - t0, ready


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def oha(port, payload, certs, http2=True, rate=None, conns=32):
    cmd = ["oha", "--no-tui", "--output-format", "json", "-z", f"{SECS}s", "-m", "POST",
           "-T", "application/json", "-D", str(payload), "--cacert", str(certs / "ca.crt")]
    if http2:
        cmd += ["--http2", "-c", str(max(1, conns // 8)), "-p", "8"]
    else:
        cmd += ["-c", str(conns)]
    if rate:
        cmd += ["-q", str(rate), "--latency-correction"]
    cmd.append(f"https://localhost:{port}/mutate?timeout=2s")
    out = subprocess.run(pinned(LOAD_CPU, cmd), capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    s, p = doc["summary"], doc.get("latencyPercentiles", {})
    codes = doc.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if str(k) == "200")
    total = sum(codes.values()) or 1
    return {"rps": s.get("requestsPerSec") or 0.0, "p50": p.get("p50"), "p99": p.get("p99"),
            "p999": p.get("p99.9"), "ok": ok / total, "success": s.get("successRate")}


def ms(v):
    return "—" if v is None else f"{v * 1000:.2f}"


def decisions(hport):
    """(all, shed) admissions so far, from the sizer's /metrics."""
    total = shed = 0.0
    with urllib.request.urlopen(f"http://127.0.0.1:{hport}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("sidecar_sizer_decisions_total{"):
                v = float(line.rsplit(" ", 1)[1])
                total += v
                if 'outcome="shed"' in line:
                    shed += v
    return total, shed


def run_suite(name, start, port_of, stop_fn, payload, certs, hport_of=None):
    """Each run's oha figures; for the sizer also the share of answers that were shed
    (allowed without sizing: they count as 200s but did no work)."""
    proc = start()

    def one(**kw):
        before = decisions(hport_of()) if hport_of else None
        res = oha(port_of(proc), payload, certs, **kw)
        if before:
            after = decisions(hport_of())
            n = after[0] - before[0]
            res["shed"] = (after[1] - before[1]) / n if n else 0.0
        return res

    try:
        res = {"h2": one(http2=True), "h1": one(http2=False)}
        for r in RATES:
            res[r] = one(http2=True, rate=r, conns=64)
    finally:
        stop_fn(proc)
    return res


def rss_kib(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    for tool, hint in [("oha", "cargo install oha --locked")]:
        if not shutil.which(tool):
            subprocess.run(hint.split(), check=True)
    OUT.mkdir(parents=True, exist_ok=True)
    certs = OUT / "certs"
    subprocess.run([str(BIN), "certs", "--out", str(certs), "--dns", "localhost", "--ip", "127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL)
    payload_dir = OUT / "payloads"
    subprocess.run([sys.executable, str(ROOT / "scripts/gen_payloads.py"), str(payload_dir)], check=True,
                   stdout=subprocess.DEVNULL)
    state = OUT / "state-1k"
    write_store(state, 1000)

    lines = []
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except Exception:
        pass
    lines.append(f"Machine: {CPUS} cores ({cpu or platform.processor()}), {platform.system()} {platform.release()}; "
                 f"server on CPU {SERVER_CPU}, oha on CPU {LOAD_CPU}; {SECS}s per run; history of 1,000 workloads.\n")

    summary = {}
    for name in PAYLOADS:
        payload = payload_dir / f"{name}.json"
        size = payload.stat().st_size
        sizer_state = {}

        def start_s():
            proc, port, hport, *_ = start_sizer(state, certs)
            sizer_state["port"], sizer_state["hport"] = port, hport
            return proc

        s = run_suite("sizer", start_s, lambda p: sizer_state["port"], stop, payload, certs,
                      hport_of=lambda: sizer_state["hport"])
        base_state = {}

        def start_b():
            port = free_port()
            proc = subprocess.Popen(pinned(SERVER_CPU, [str(BASELINE), f"127.0.0.1:{port}", str(certs / "tls.crt"),
                                                        str(certs / "tls.key"), str(payload)]),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(port, proc)
            base_state["port"] = port
            return proc

        b = run_suite("baseline", start_b, lambda p: base_state["port"], stop, payload, certs)
        k = None
        if KUBE_EXAMPLE and name == "typical":
            kube_state = {}

            def start_k():
                port = free_port()
                cmd = [a.format(port=port, cert=certs / "tls.crt", key=certs / "tls.key")
                       for a in KUBE_EXAMPLE.split()]
                proc = subprocess.Popen(pinned(SERVER_CPU, cmd), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                wait_port(port, proc)
                kube_state["port"] = port
                return proc

            k = run_suite("kube-rs", start_k, lambda p: kube_state["port"], stop, payload, certs)
        summary[name] = (s, b, k)
        lines.append(f"### {name} pod ({size:,} byte review)\n")
        lines.append("| run | sizer req/s | baseline req/s | ratio | sizer p50 ms | sizer p99 ms | sizer p99.9 ms | baseline p99 ms | p99 ratio | sizer 200s | sizer shed |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for key, label in [("h2", "closed loop, HTTP/2 (4 conns × 8 streams)"), ("h1", "closed loop, HTTP/1.1 (32 conns)")] + \
                          [(r, f"open loop {r}/s, HTTP/2") for r in RATES]:
            x, y = s[key], b[key]
            ratio = x["rps"] / y["rps"] if y["rps"] else 0
            p99r = (x["p99"] / y["p99"]) if (x["p99"] and y["p99"]) else None
            lines.append(f"| {label} | {x['rps']:,.0f} | {y['rps']:,.0f} | {ratio:.2f} | {ms(x['p50'])} | {ms(x['p99'])} | "
                         f"{ms(x['p999'])} | {ms(y['p99'])} | {'—' if p99r is None else f'{p99r:.2f}'} | {x['ok']:.1%} | {x.get('shed', 0):.1%} |")
        lines.append("")

    if "typical" in summary:
        s, b, k = summary["typical"]
        lines.append("### Summary: typical pod, HTTP/2 over TLS, server on one core, load on the other\n")
        lines.append("| | sizer | fixed-response baseline | sizer ÷ baseline | kube-rs admission example | sizer ÷ kube-rs | target |")
        lines.append("|---|---|---|---|---|---|---|")

        def kcell(key, field, fmt):
            if k is None:
                return "not available locally" if not KUBE_EXAMPLE else "—"
            return fmt(k[key][field])

        def kratio(key, field):
            if k is None or not k[key][field] or not s[key][field]:
                return "—"
            return f"{s[key][field] / k[key][field]:.2f}"

        for r in [2000, 5000]:
            x, y = s[r], b[r]
            ratio = f"{x['p99'] / y['p99']:.2f}" if (x["p99"] and y["p99"]) else "—"
            met = "met" if x["p99"] is not None and x["p99"] <= TARGET_P99[r] else "missed"
            lines.append(f"| open-loop p99 at {r:,}/s (ms) | {ms(x['p99'])} | {ms(y['p99'])} | {ratio} | "
                         f"{kcell(r, 'p99', ms)} | {kratio(r, 'p99')} | ≤ {TARGET_P99[r] * 1000:.0f} ms: **{met}** |")
        x, y = s["h2"], b["h2"]
        ratio = x["rps"] / y["rps"] if y["rps"] else 0
        met = "met" if ratio >= TARGET_RATIO else "missed"
        lines.append(f"| max throughput (req/s, closed loop) | {x['rps']:,.0f} | {y['rps']:,.0f} | {ratio:.2f} | "
                     f"{kcell('h2', 'rps', lambda v: f'{v:,.0f}')} | {kratio('h2', 'rps')} | ≥ {TARGET_RATIO}× baseline: **{met}** |")
        lines.append("")
        if not KUBE_EXAMPLE:
            lines.append("The kube-rs admission example is not built here (no local copy of it); set "
                         "KUBE_ADMISSION_EXAMPLE to include it.\n")

    crit = ROOT / "target/criterion"
    if crit.is_dir():
        lines.append("### Micro (criterion, mean per call)\n")
        lines.append("| group | small | typical | large |")
        lines.append("|---|---|---|---|")
        for group, label in [("review", "review (whole request path)"), ("pipeline", "decide+patch (pipeline::run)"),
                             ("parse-lean", "parse (lean view → Pod)"), ("parse", "parse (typed AdmissionReview<Pod>)")]:
            cells = []
            for p in ["small", "typical", "large"]:
                est = crit / group / p / "new/estimates.json"
                if est.is_file():
                    ns = json.loads(est.read_text())["mean"]["point_estimate"]
                    cells.append(f"{ns / 1000:.1f} µs")
                else:
                    cells.append("—")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")

    lines.append("### Memory and warm restart\n")
    lines.append("| workloads (3 containers each) | RSS after ready | store size | start → ready |")
    lines.append("|---|---|---|---|")
    for n in [1000, 10000, 50000]:
        st = OUT / f"state-{n // 1000}k"
        write_store(st, n)
        proc, port, hport, total, ready = start_sizer(st, certs)
        # One admission so the request path is warm.
        time.sleep(0.2)
        rss = rss_kib(proc.pid)
        stop(proc)
        size = (st / "history.json").stat().st_size
        lines.append(f"| {n:,} | {rss / 1024:.1f} MiB | {size / 1048576:.1f} MiB | {ready * 1000:.0f} ms |")
    lines.append("")
    report = "\n".join(lines)
    print(report)
    (ROOT / "target/bench-report.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
