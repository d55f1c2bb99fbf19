# `make demo` and `make test` work on a fresh Debian 12 machine as root: they install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the tests, the demo and the benchmarks use (real peers, never mocks)
DEB_PACKAGES := mmdebstrap pax-utils strace gcc libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
	musl-tools iproute2 util-linux curl ca-certificates openssl zstd python3-venv \
	skopeo umoci runc podman buildah docker-registry docker.io postgresql-client qemu-user-static openssh-client time

.PHONY: demo test lint coverage bench fuzz image profiles deb-deps venv clean-cache

deb-deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "make: installing Debian packages:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(STAMP)

demo: deb-deps venv
	$(BIN)/python examples/demo.py

# the type checker and the linter are part of the suite: a finding fails `make test`
lint: venv
	$(BIN)/ruff check distill tests bench examples
	$(BIN)/ruff format --check distill tests bench examples
	$(BIN)/mypy

# shuffled (the seed is printed in the header: --shuffle=SEED repeats an order); a missing tool fails
test: deb-deps venv lint
	DISTILL_TEST_STRICT=1 $(BIN)/python -m pytest --shuffle=random

# the suite under coverage.py (line and branch, every `distill` subprocess too): a slower run, not part of `make test`
coverage: deb-deps venv
	rm -f .coverage .coverage.*
	COVERAGE_FILE=$(CURDIR)/.coverage DISTILL_TEST_STRICT=1 $(BIN)/python -m coverage run -m pytest --shuffle=random -p no:cacheprovider
	$(BIN)/python -m coverage combine -q
	$(BIN)/python -m coverage report

# profiles/parsed.json, the pre-parsed built-in profiles (after editing one; tests/unit/test_profile.py checks it is fresh)
profiles: venv
	$(BIN)/python -m distill.builtin_index profiles

# distill's own image, distilled by distill: build/image/oci (tag latest) and build/image/distill.tar
image: deb-deps venv
	$(BIN)/python examples/distill_image.py build/image

# every scenario of bench/run.py; BENCH_ONLY=size (or size,memory) runs some, BENCH_ARGS=--no-guard only reports
bench: deb-deps venv
	$(BIN)/python bench/run.py $(if $(BENCH_ONLY),--only $(BENCH_ONLY)) $(BENCH_ARGS)

# every atheris harness for FUZZ_SECONDS each (make test runs them for a fixed number of inputs)
fuzz: deb-deps venv
	$(BIN)/python tests/fuzz/run.py --seconds $${FUZZ_SECONDS:-120}

clean-cache:
	rm -rf "$${DISTILL_TEST_CACHE:-$$HOME/.cache/distill-test}"
