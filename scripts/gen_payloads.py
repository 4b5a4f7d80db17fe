#!/usr/bin/env python3
"""Benchmark payloads from the captured reviews, written to DIR/{small,typical,large}.json.

small:   one container (the captured Deployment pod, ~6 KB)
typical: ~10 KB, Istio already injected: app + istio-proxy + istio-init, env and volumes
large:   ~100 KB, 40 containers with env, volumes and mounts
"""
import copy, json, pathlib, sys

root = pathlib.Path(__file__).resolve().parent.parent
out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else root / "target/bench/payloads")
out.mkdir(parents=True, exist_ok=True)
small = json.loads((root / "tests/fixtures/review-deployment-pod.json").read_text())
inj = json.loads((root / "tests/fixtures/review-istio-already-injected.json").read_text())

typical = copy.deepcopy(inj)
# The injected fixture has no owner; give it the cart Deployment's so it is sized from history.
typical["request"]["object"]["metadata"]["ownerReferences"] = small["request"]["object"]["metadata"]["ownerReferences"]
typical["request"]["object"]["metadata"]["labels"]["pod-template-hash"] = "7d9f8c6b5"
app = next(c for c in typical["request"]["object"]["spec"]["containers"] if c["name"] == "master")
app["env"] = [{"name": f"SETTING_{i}", "value": f"value-{i}-" + "v" * 24} for i in range(30)]
shipper = copy.deepcopy(app)
shipper["name"] = "log-shipper"
shipper["env"] = [{"name": f"SHIP_{i}", "value": f"dest-{i}"} for i in range(20)]
typical["request"]["object"]["spec"]["containers"].insert(1, shipper)
for i in range(6):
    typical["request"]["object"]["spec"]["volumes"].append({"name": f"config-{i}", "configMap": {"name": f"cart-config-{i}"}})
    app.setdefault("volumeMounts", []).append({"name": f"config-{i}", "mountPath": f"/etc/cart/{i}", "readOnly": True})

large = copy.deepcopy(typical)
spec = large["request"]["object"]["spec"]
for i in range(40):
    c = copy.deepcopy(app)
    c["name"] = f"worker-{i}"
    c["env"] = [{"name": f"W{i}_SETTING_{j}", "value": f"value-{j}-" + "x" * 20} for j in range(25)]
    spec["containers"].append(c)

for name, doc in [("small", small), ("typical", typical), ("large", large)]:
    text = json.dumps(doc, separators=(",", ":"))
    (out / f"{name}.json").write_text(text)
    print(f"{name}: {len(text)} bytes, {len(doc['request']['object']['spec']['containers'])} containers")
