# pathfed: the two commands a new user needs are `make run` and `make test`.
CARGO ?= cargo
SHELL := /bin/bash

.PHONY: setup build run test lint bench

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release -p pathfed

# Starts the platform on the embedded default (SQLite + local object store under ./data).
# The first run creates an admin and prints the password once.
run: build
	@target/release/pathfed admin init --if-empty --hospital "Demo Hub" --kind hub --user admin --generate-password
	@echo "Open http://$${PATHFED_LISTEN:-127.0.0.1:8080} and sign in (Ctrl-C stops the server)."
	target/release/pathfed serve

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Clippy's lints run inside the test build itself: clippy-driver compiles the workspace's own
# crates (with `-D warnings`, as `make lint`), so the dependencies are compiled once, for the
# tests, instead of once more for a separate check build. --no-fail-fast runs every test binary
# even after one fails, so a run reports every failure. The total on the last line sums every
# test binary's result.
#
# Four test threads: most server tests wait on real servers, jobs and the browser rather than
# compute. On 2 cores the server tests took 427 s and 507 s in two runs at four threads, 487 s
# at two. (Running the CPU-bound training tests beside them, as a second cargo invocation, was
# slower: both fought for the cores.)
CLIPPY_DRIVER ?= $(shell command -v clippy-driver 2>/dev/null || echo clippy-driver)
test: setup
	$(CARGO) fmt --all -- --check
	@mkdir -p target
	set -o pipefail; RUSTC_WORKSPACE_WRAPPER="$(CLIPPY_DRIVER)" \
	  CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__" \
	  $(CARGO) test --workspace --all-targets --no-fail-fast -- --test-threads 4 2>&1 | tee target/test.log
	@awk '/^test result:/ {p += $$4; f += $$6} END {printf "%d passed, %d failed\n", p, f}' target/test.log

# Each compares against a reference measured in the same run (OpenSlide, sha256sum; ndarray
# and PyTorch for training, PyTorch only when its Python has torch and torchvision; the
# model's pure compute for inference; the encoder's compute and PyTorch + timm, when present,
# for embeddings).
# The benchmark build adds Burn's ndarray backend, the CPU reference of `bench train`.
bench: setup
	$(CARGO) build --release -p pathfed --features ndarray-reference
	target/release/pathfed bench slide
	target/release/pathfed bench serve
	target/release/pathfed bench extract
	target/release/pathfed bench train
	target/release/pathfed bench infer
	target/release/pathfed bench embed
