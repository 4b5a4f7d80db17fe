#!/usr/bin/env python3
"""Check the OCI archive `make image` wrote, as a container runtime would read it.

Reads the archive with Python's tarfile and json only (an oracle independent of buildah and
of our code): index.json → manifest → config and layers. Checks the config (entrypoint,
numeric non-root user, no shell in the image), unpacks the layers into a root filesystem, runs
the binary from it with `--version` and `serve --help`, and checks that `ldd` calls it static.
Usage: image-check.py ARCHIVE
"""
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile


def fail(msg):
    print(f"image check FAILED: {msg}")
    sys.exit(1)


def blob(tar, digest):
    algo, hexd = digest.split(":", 1)
    member = tar.extractfile(f"blobs/{algo}/{hexd}")
    if member is None:
        fail(f"missing blob {digest}")
    return member.read()


def main():
    if len(sys.argv) != 2:
        fail("usage: image-check.py ARCHIVE")
    path = sys.argv[1]
    with tarfile.open(path) as tar:
        layout = json.loads(tar.extractfile("oci-layout").read())
        if layout.get("imageLayoutVersion") != "1.0.0":
            fail(f"oci-layout: {layout}")
        index = json.loads(tar.extractfile("index.json").read())
        manifests = index.get("manifests", [])
        if len(manifests) != 1:
            fail(f"index.json has {len(manifests)} manifests")
        ref = manifests[0].get("annotations", {}).get("org.opencontainers.image.ref.name")
        manifest = json.loads(blob(tar, manifests[0]["digest"]))
        config = json.loads(blob(tar, manifest["config"]["digest"]))
        cfg = config.get("config", {})
        if cfg.get("Entrypoint") != ["/sidecar-sizer"]:
            fail(f"Entrypoint {cfg.get('Entrypoint')}")
        if cfg.get("User") != "65532:65532":
            fail(f"User {cfg.get('User')!r}, want the numeric non-root 65532:65532")
        if config.get("os") != "linux":
            fail(f"os {config.get('os')}")
        with tempfile.TemporaryDirectory() as root:
            names = []
            for layer in manifest["layers"]:
                data = blob(tar, layer["digest"])
                if layer["mediaType"].endswith("+gzip") or data[:2] == b"\x1f\x8b":
                    data = gzip.decompress(data)
                with tarfile.open(fileobj=io.BytesIO(data)) as lt:
                    names += [m.name.lstrip("./") for m in lt.getmembers() if not m.isdir()]
                    lt.extractall(root, filter="tar")
            if any(n in ("bin/sh", "usr/bin/sh", "bin/busybox") for n in names):
                fail(f"the image has a shell: {names}")
            want = {"sidecar-sizer", "etc/ssl/certs/ca-certificates.crt"}
            if set(names) != want:
                fail(f"image files {sorted(names)}, want exactly {sorted(want)}")
            binary = os.path.join(root, "sidecar-sizer")
            ldd = subprocess.run(["ldd", binary], capture_output=True, text=True)
            text = (ldd.stdout + ldd.stderr).lower()
            if "not a dynamic executable" not in text and "statically linked" not in text:
                fail(f"ldd says the binary is dynamic: {text.strip()}")
            version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
            if version.returncode != 0 or not version.stdout.startswith("sidecar-sizer "):
                fail(f"--version: {version.returncode} {version.stdout!r} {version.stderr!r}")
            helptext = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=30)
            if helptext.returncode != 0 or "--tls-cert" not in helptext.stdout:
                fail(f"serve --help: {helptext.returncode} {helptext.stderr!r}")
    print(f"image OK: {path} ({ref}), {version.stdout.strip()}, static, user 65532, no shell")


main()
