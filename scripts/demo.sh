#!/usr/bin/env bash
# `make demo` (and `make cutover-demo`: `demo.sh cutover`): runs the demo driver (tests/demo.rs),
# which starts the real worker binaries.
source "$(dirname "$0")/lib.sh"
target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
exec "$target/debug/demo" "$@"
