# The two commands that matter: `make demo` and `make test`. See README.md.
#
# One cargo target dir per machine, shared by every clone (CI's fresh clone included), so
# librdkafka and the dependencies build once per machine.
export CARGO_TARGET_DIR ?= /var/tmp/bangumi-cdc/target
CARGO ?= cargo

.PHONY: help up down status build demo test lint unit fixtures provision clean test-live

help:
	@echo "make demo      run the fleet on the embedded fixtures and print a summary"
	@echo "make test      fmt, clippy, unit and integration tests against the real services"
	@echo "make up|down|status   local broker, schema registry stand-in, Redis, MariaDB"
	@echo "make fixtures  regenerate fixtures/debezium from real Debezium (needs Java)"

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

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: up lint
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run --workspace --no-fail-fast
	bash scripts/helm-test.sh

.PHONY: bench
bench: up
	@bash scripts/bench.sh

fixtures:
	@bash scripts/fixtures.sh

# Live CDC end-to-end test: MariaDB -> real Debezium -> broker -> worker binaries -> Redis (fixtures/README.md).
test-live: up
	bash scripts/live-test.sh

clean:
	$(CARGO) clean
