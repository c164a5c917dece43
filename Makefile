# pathfed: the two commands a new user needs are `make run` and `make test`.
CARGO ?= cargo
SHELL := /bin/bash
DEMO := data/demo

.PHONY: setup build run test lint bench clean-demo

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release -p pathfed

# Until the platform service lands, `run` prepares a demo: a generated slide, its details and
# its Deep Zoom pyramid, ready for any Deep Zoom viewer.
run: build
	@mkdir -p $(DEMO)
	@[ -f $(DEMO)/demo.svs ] || target/release/pathfed slide synth --out $(DEMO)/demo.svs --width 20000 --height 15000 --label-line "PATHFED DEMO"
	target/release/pathfed slide info $(DEMO)/demo.svs
	target/release/pathfed slide thumbnail $(DEMO)/demo.svs --size 1024 --out $(DEMO)/thumbnail.png
	target/release/pathfed slide tiles $(DEMO)/demo.svs --out $(DEMO)/deepzoom
	@echo "Demo ready in $(DEMO)/: thumbnail.png and deepzoom/demo.dzi. See 'target/release/pathfed --help'."

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The total on the last line sums every test binary's result.
test: lint
	@mkdir -p target
	set -o pipefail; $(CARGO) test --workspace --all-targets 2>&1 | tee target/test.log
	@awk '/^test result:/ {p += $$4; f += $$6} END {printf "%d passed, %d failed\n", p, f}' target/test.log

bench: build
	target/release/pathfed bench slide
