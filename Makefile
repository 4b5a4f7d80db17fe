# sidecar-sizer — the two commands a fresh machine needs are `make run` and `make test`.
CARGO   ?= cargo
BIN     := target/debug/sidecar-sizer
LISTEN  ?= 127.0.0.1:8443
HEALTH  ?= 127.0.0.1:8080
# Names the dev serving certificate is valid for: local use and the in-cluster Service.
CERT_NAMES := --dns localhost --dns sidecar-sizer --dns sidecar-sizer.sidecar-sizer \
              --dns sidecar-sizer.sidecar-sizer.svc --dns sidecar-sizer.sidecar-sizer.svc.cluster.local \
              --ip 127.0.0.1

.PHONY: all build run test test-deps manifests-check manifests-static image image-check bench fuzz lint fmt certs clean

all: build

build:
	$(CARGO) build --bin sidecar-sizer

# Dev certs: a CA (certs/ca.crt) and a serving cert signed by it (certs/tls.crt, tls.key).
certs/tls.crt certs/tls.key: | build
	$(BIN) certs --out certs $(CERT_NAMES)

certs: build
	$(BIN) certs --out certs $(CERT_NAMES)

# The webhook on 127.0.0.1 with dev certs, the example specs and the example history.
run: build certs/tls.crt
	$(BIN) --log-format text serve \
	  --listen $(LISTEN) --health-listen $(HEALTH) \
	  --tls-cert certs/tls.crt --tls-key certs/tls.key \
	  --spec-dir examples/specs --history examples/history.csv --state-dir target/state \
	  $(if $(PROMETHEUS_URL),--prometheus-url $(PROMETHEUS_URL))

# All tests. Installs what the tests need (Debian's prometheus: prometheus + promtool for
# the history tests; Debian's chromium and PyPI's markdown for the report tests), builds every
# test target once, then runs them; then the manifests check and the image check (builds the
# image with buildah, installed if missing).
test: test-deps
	$(CARGO) build --all-targets --locked
	$(CARGO) test --all-targets --locked
	$(MAKE) --no-print-directory manifests-check
	$(MAKE) --no-print-directory image-check

test-deps:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null \
	  && command -v openssl >/dev/null && command -v python3 >/dev/null || { \
	  echo "installing Debian's prometheus (history tests), openssl and python3 (TLS rotation test)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    prometheus openssl python3 >/dev/null; }
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the report's HTML test (headless --dump-dom)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
	@python3 -c 'import markdown' 2>/dev/null || { \
	  echo "installing Python-Markdown (PyPI) for the report's markdown test"; \
	  python3 -m pip install -q markdown; }

# Render every overlay and validate every object (run by `make test`).
manifests-check: test-deps manifests-static
	scripts/manifests-check.sh

# The static-certs overlay's generated/ files from certs/ (made if missing).
manifests-static: certs/tls.crt
	mkdir -p manifests/overlays/static-certs/generated
	cp certs/tls.crt certs/tls.key manifests/overlays/static-certs/generated/
	ca=$$(base64 -w0 < certs/ca.crt); \
	printf -- '- op: add\n  path: /webhooks/0/clientConfig/caBundle\n  value: %s\n- op: add\n  path: /webhooks/1/clientConfig/caBundle\n  value: %s\n' "$$ca" "$$ca" \
	  > manifests/overlays/static-certs/generated/cabundle-patch.yaml
	# The client-ca overlay's CA file (in a cluster: the CA of the apiserver's client cert).
	[ -f manifests/overlays/client-ca/client-ca.crt ] || cp certs/ca.crt manifests/overlays/client-ca/client-ca.crt

# The container image: a static release binary in an OCI image FROM scratch (user 65532,
# no shell), written to target/image/sidecar-sizer-<version>.oci.tar with Debian's buildah
# (installed if missing). `docker load -i`, `podman load -i` and `kind load image-archive`
# take the archive. IMAGE_TAG overrides the tag (default: the crate version).
image:
	scripts/image.sh

# Build the image, then read the archive as a runtime would and run the binary from it.
image-check: image
	python3 scripts/image-check.py target/image/sidecar-sizer-$$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1).oci.tar

# Benchmarks (never part of `make test`): criterion micro benches, then the macro run
# against the fixed-response baseline with oha, then `report` over 50,000 pods against the
# API double (scripts/bench_report.py); report in target/bench-report.md.
bench:
	$(CARGO) build --release --locked --bin sidecar-sizer --example baseline --example report_double
	python3 scripts/gen_payloads.py
	$(CARGO) bench --locked --bench admission -- --warm-up-time 1 --measurement-time 3
	python3 scripts/bench.py
	python3 scripts/bench_report.py

# cargo-fuzz targets (fuzz/, outside the main build), FUZZ_SECONDS each (default 60).
fuzz:
	scripts/fuzz.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf certs/*.crt certs/*.key
