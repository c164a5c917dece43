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
# Once built, the tests run as two cargo invocations side by side (same targets, same features,
# so nothing is rebuilt): the few CPU-bound training tests in CPU_BOUND_TESTS, and everything
# else with four test threads. Most server tests wait on real servers, jobs and the browser
# rather than compute, so overlapping the two saved about four minutes of a 2-core run. A test
# renamed without updating the list still runs, in the second group.
CLIPPY_DRIVER ?= $(shell command -v clippy-driver 2>/dev/null || echo clippy-driver)
CPU_BOUND_TESTS := learns_textures_from_pixels_and_not_from_shuffled_labels \
  a_resumed_run_ends_with_the_same_model_as_an_uninterrupted_one
LINTED := RUSTC_WORKSPACE_WRAPPER="$(CLIPPY_DRIVER)" \
  CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
TEST_ALL := $(CARGO) test --workspace --all-targets --no-fail-fast
test: setup
	$(CARGO) fmt --all -- --check
	@mkdir -p target
	set -o pipefail; $(LINTED) $(TEST_ALL) --no-run 2>&1 | tee target/test-build.log
	set -o pipefail; \
	  ( $(LINTED) $(TEST_ALL) -- --exact $(CPU_BOUND_TESTS) > target/test-cpu.log 2>&1 ) & cpu=$$!; \
	  $(LINTED) $(TEST_ALL) -- --test-threads 4 $(addprefix --skip ,$(CPU_BOUND_TESTS)) 2>&1 \
	    | tee target/test.log; rest=$$?; \
	  wait $$cpu; cpu_rc=$$?; \
	  grep -E '^test .*(FAILED|ok)$$|^test result: [^ ]+\. [1-9]|panicked|^failures' target/test-cpu.log || true; \
	  cat target/test-cpu.log >> target/test.log; \
	  test $$rest -eq 0 && test $$cpu_rc -eq 0
	@awk '/^test result:/ {p += $$4; f += $$6} END {printf "%d passed, %d failed\n", p, f}' target/test.log

# Each compares against a reference measured in the same run (OpenSlide, sha256sum; ndarray
# and PyTorch for training, PyTorch only when its Python has torch and torchvision; the
# model's pure compute for inference).
# The benchmark build adds Burn's ndarray backend, the CPU reference of `bench train`.
bench: setup
	$(CARGO) build --release -p pathfed --features ndarray-reference
	target/release/pathfed bench slide
	target/release/pathfed bench serve
	target/release/pathfed bench extract
	target/release/pathfed bench train
	target/release/pathfed bench infer
