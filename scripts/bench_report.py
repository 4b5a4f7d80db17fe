#!/usr/bin/env python3
"""`make bench`: `sidecar-sizer report` at scale. The API double (benches/report_double.rs)
holds 50,000 pods in 5,000 Deployments; the release binary lists them (limit=500 pages)
and renders JSON. CPU (user + system) and peak RSS of the report process alone come from
wait4(). Targets (issue 17): <= 10 s CPU, <= 256 MiB RSS. Appends to target/bench-report.md.
Environment: REPORT_PODS (50000), REPORT_WORKLOADS (5000).
"""
import os, pathlib, subprocess, sys, time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/sidecar-sizer"
DOUBLE = ROOT / "target/release/examples/report_double"
PODS = os.environ.get("REPORT_PODS", "50000")
WORKLOADS = os.environ.get("REPORT_WORKLOADS", "5000")

double = subprocess.Popen([str(DOUBLE), PODS, WORKLOADS], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
info = {}
while len(info) < 2:
    line = double.stdout.readline()
    if not line:
        sys.exit("report_double ended before printing its URL")
    k, v = line.strip().split(" ", 1)
    info[k] = v
results = []
try:
    for fmt in ["json", "html"]:
        out = ROOT / f"target/bench/report.{fmt}"
        out.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        p = subprocess.Popen([str(BIN), "report", "--kube-api-url", info["URL"],
                              "--history", info["HISTORY"], "--format", fmt,
                              "--output", str(out)], stderr=subprocess.PIPE)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        err = p.stderr.read().decode()
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            sys.exit(f"report exited {code}: {err}")
        cpu = ru.ru_utime + ru.ru_stime
        rss_mib = ru.ru_maxrss / 1024  # Linux: KiB
        results.append((fmt, cpu, rss_mib, wall, out.stat().st_size))
finally:
    double.stdin.close()
    double.wait()

lines = [f"\n## report: {PODS} pods in {WORKLOADS} workloads (targets: <= 10 s CPU, <= 256 MiB RSS)\n",
         "| format | CPU s (user+sys) | peak RSS MiB | wall s | output bytes |",
         "|---|---|---|---|---|"]
ok = True
for fmt, cpu, rss, wall, size in results:
    lines.append(f"| {fmt} | {cpu:.2f} | {rss:.1f} | {wall:.2f} | {size} |")
    ok &= cpu <= 10 and rss <= 256
text = "\n".join(lines) + "\n"
print(text)
report = ROOT / "target/bench-report.md"
with open(report, "a") as f:
    f.write(text)
if not ok:
    sys.exit("report benchmark over its targets")
