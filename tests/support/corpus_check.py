"""Compare manifests before and after `sidecar-sizer review --write`, as YAML 1.1 tools read them.

Usage: corpus_check.py ORIGINAL_DIR WRITTEN_DIR [--kubectl]

Every document is read with PyYAML (YAML 1.1: what kubectl-era tools read) and, with
--kubectl, with kubectl itself (`kubectl annotate --local -o json`, which decodes the file
offline with kubectl's own YAML reader). After removing what sidecar-sizer owns (the four
sidecar.istio.io/proxy* annotations, sidecar-sizer.io/decision, the istio-proxy container's
cpu/memory requests and limits), original and written must be identical, and what we wrote
must be strings. The line diff may only touch lines that carry our keys or the
`annotations:`/`metadata:` (or JSON brace) lines we had to add.
"""
import difflib
import json
import os
import subprocess
import sys

import yaml

OURS = {
    "sidecar.istio.io/proxyCPU",
    "sidecar.istio.io/proxyCPULimit",
    "sidecar.istio.io/proxyMemory",
    "sidecar.istio.io/proxyMemoryLimit",
    "sidecar-sizer.io/decision",
}
failures = []


def fail(msg):
    failures.append(msg)


def strip(v, where, ours_seen):
    """Remove what we own; return the rest. Empty annotations/metadata maps are dropped."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if k == "annotations" and x is None:
                x = {}  # `annotations:` with nothing, that we filled
            if k == "annotations" and isinstance(x, dict):
                for ok in OURS & set(x):
                    ours_seen.append((where, ok, x[ok]))
                x = {a: b for a, b in x.items() if a not in OURS}
            x = strip(x, f"{where}.{k}", ours_seen)
            if k in ("annotations", "metadata") and x == {}:
                continue
            out[k] = x
        if v.get("name") == "istio-proxy" and isinstance(out.get("resources"), dict):
            res = dict(out["resources"])
            for section in ("requests", "limits"):
                if isinstance(res.get(section), dict):
                    for q in ("cpu", "memory"):
                        if q in res[section]:
                            ours_seen.append((where, f"resources.{section}.{q}", res[section][q]))
                    rest = {q: x for q, x in res[section].items() if q not in ("cpu", "memory")}
                    if rest:
                        res[section] = rest
                    else:
                        del res[section]
            if res:
                out["resources"] = res
            else:
                del out["resources"]
        return out
    if isinstance(v, list):
        return [strip(x, f"{where}[{i}]", ours_seen) for i, x in enumerate(v)]
    return v


def load(path):
    with open(path, newline="") as f:
        text = f.read()
    if path.endswith(".json"):
        return text, [json.loads(text)]
    return text, [d for d in yaml.safe_load_all(text) if d is not None]


def kubectl_objects(path):
    out = subprocess.run(
        ["kubectl", "annotate", "--local", "--overwrite", "-f", path, "-o", "json", "corpus-check=1"],
        capture_output=True, text=True, timeout=60,
    )
    if out.returncode != 0:
        fail(f"{path}: kubectl cannot read it: {out.stderr.strip()}")
        return []
    dec, objs, i, s = json.JSONDecoder(), [], 0, out.stdout
    while True:
        while i < len(s) and s[i].isspace():
            i += 1
        if i >= len(s):
            return objs
        obj, i = dec.raw_decode(s, i)
        objs.extend(obj["items"] if obj.get("kind") == "List" else [obj])


def compare(name, before, after):
    seen_before, seen_after = [], []
    b = [strip(d, name, seen_before) for d in before]
    a = [strip(d, name, seen_after) for d in after]
    if a != b:
        fail(f"{name}: documents differ beyond our fields:\n  before {json.dumps(b, default=str)[:2000]}\n  after  {json.dumps(a, default=str)[:2000]}")
    for where, key, value in seen_after:
        if not isinstance(value, str):
            fail(f"{name}: {where} {key} = {value!r} is not a string")
    return seen_after


STRUCTURAL = {"annotations:", "metadata:", '"annotations": {', '"metadata": {', "}", "},", "resources:",
              "requests:", "limits:"}


def allowed_line(line):
    t = line.strip()
    if any(k in line for k in OURS):
        return True
    if t in STRUCTURAL:
        return True
    # istio-proxy resources (checked structurally above).
    return t.startswith(("cpu:", "memory:", "requests: {", "limits: {"))


def main():
    orig_dir, new_dir = sys.argv[1], sys.argv[2]
    use_kubectl = "--kubectl" in sys.argv[3:]
    wrote = 0
    for fname in sorted(os.listdir(orig_dir)):
        if not fname.endswith((".yaml", ".yml", ".json")):
            continue
        o, n = os.path.join(orig_dir, fname), os.path.join(new_dir, fname)
        otext, odocs = load(o)
        ntext, ndocs = load(n)
        seen = compare(f"{fname} (PyYAML)", odocs, ndocs)
        if seen:
            wrote += 1
        if use_kubectl:
            compare(f"{fname} (kubectl)", kubectl_objects(o), kubectl_objects(n))
        diff = [l for l in difflib.unified_diff(otext.splitlines(), ntext.splitlines(), lineterm="", n=0)
                if not l.startswith(("---", "+++", "@@"))]
        added = [l[1:] for l in diff if l.startswith("+")]
        for line in diff:
            if allowed_line(line[1:]):
                continue
            # A flow mapping that gained our members: the old line is the new one minus
            # one inserted chunk.
            if line.startswith("-") and any(
                    len(p) > len(line) - 1 and any(p.startswith(line[1:i + 1]) and p.endswith(line[i + 1:])
                                                   for i in range(len(line)))
                    and any(k in p for k in OURS) for p in added):
                continue
            fail(f"{fname}: diff touches a line that is not ours: {line!r}")
        # CRLF files stay CRLF, and the trailing newline (or its absence) is kept.
        if ("\r\n" in otext) != ("\r\n" in ntext) or ntext.count("\n") != ntext.count("\r\n") and "\r\n" in otext:
            fail(f"{fname}: line endings changed")
        if otext.endswith("\n") != ntext.endswith("\n"):
            fail(f"{fname}: trailing newline changed")
    print(f"corpus_check: {wrote} file(s) with our fields, kubectl={'yes' if use_kubectl else 'no'}")
    for f in failures:
        print("FAIL:", f)
    sys.exit(1 if failures else 0)


main()
