# The two commands that matter: `make demo` and `make test`. See README.md.
#
# One cargo target dir per machine, shared by every clone (CI's fresh clone included), so
# librdkafka and the dependencies build once per machine.
export CARGO_TARGET_DIR ?= /var/tmp/bangumi-cdc/target
CARGO ?= cargo
# Where rustup puts cargo when scripts/install.sh had to install it.
export PATH := $(HOME)/.cargo/bin:$(PATH)
# Seconds each fuzz target runs in `make test` (longer runs: FUZZ_SECONDS=600 bash scripts/fuzz.sh).
FUZZ_SECONDS ?= 15

.PHONY: help up down status build demo cutover-demo parity test lint fixtures clean test-live bench soak image

help:
	@echo "make demo      run the fleet on the embedded fixtures and print a summary"
	@echo "make cutover-demo  a legacy consumer group hands over to a family (dlq cutover)"
	@echo "make parity [LEGACY_CMD='…'] [FAMILY=…] [EVENTS=…]  legacy worker vs family: Redis writes per record"
	@echo "make test      fmt, clippy, unit and integration tests against the real services"
	@echo "make up|down|status   local broker, schema registry stand-in, Redis, MariaDB, Meilisearch"
	@echo "make fixtures  regenerate fixtures/debezium from real Debezium (needs Java)"
	@echo "make test-live only the live Debezium end-to-end test (part of make test)"
	@echo "make bench     benchmarks; writes BENCHMARKS.md"
	@echo "make soak      the reliability suite 3x at larger counts, then 300 s of fuzzing per target"
	@echo "make image     build the image without a container engine (root, mmdebstrap) and test it"

up:
	@bash scripts/infra.sh up

down:
	@bash scripts/infra.sh down

status:
	@bash scripts/infra.sh status

build:
	$(CARGO) build --workspace --bins

demo: up build
	@bash scripts/demo.sh

# Only the demo's last step: a legacy group applies part of a stream, `dlq cutover` hands the
# rest to the family.
cutover-demo: up build
	@bash scripts/demo.sh cutover

# The offline parity harness (README "Parity harness"). LEGACY_CMD reaches it as written (a `$`
# stays a `$`, for the shell that runs it); unset, the binary's defaults apply.
ifdef LEGACY_CMD
override LEGACY_CMD := $(value LEGACY_CMD)
export LEGACY_CMD
endif
ifdef FAMILY
export FAMILY
endif
ifdef EVENTS
export EVENTS
endif
ifneq ($(origin LEGACY_TOPIC_PREFIX),undefined)
export LEGACY_TOPIC_PREFIX
endif
parity: up build
	@"$(CARGO_TARGET_DIR)/debug/parity"

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Everything CI runs: lint, unit + integration tests against the real services, the Helm chart,
# the Dockerfile (hadolint, its binaries), bounded fuzzing of the decoders and the wiki parser,
# and the live Debezium end-to-end test.
test: up lint
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run --workspace --no-fail-fast
	bash scripts/helm-test.sh
	bash scripts/dockerfile-lint.sh
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh
	bash scripts/live-test.sh

bench: up
	@bash scripts/bench.sh

# The reliability suite (tests/reliability*.rs) three times in a row with RELIABILITY_SCALE times
# the events of `make test`, then longer fuzzing; prints a per-scenario summary (scripts/soak.sh).
soak: up
	@bash scripts/soak.sh

fixtures:
	@bash scripts/fixtures.sh

# The image without a container engine (scripts/image-build.sh): release binaries, a Debian root
# filesystem (mmdebstrap), each binary's --help inside it, an OCI layout to publish.
image:
	@bash scripts/image-build.sh

# Live CDC end-to-end test: MariaDB -> real Debezium -> broker -> worker binaries -> Redis (fixtures/README.md).
test-live: up
	bash scripts/live-test.sh

clean:
	$(CARGO) clean
