#!/usr/bin/env bash
# `make bench`: throughput, memory and latency of the fleet beside their ceilings, measured in one
# run (these machines are shared and noisy). Writes BENCHMARKS.md, bench/results.json and the
# plots in bench/; a run of named sections writes them under .local/bench/<sections>/ instead.
# Nothing here passes or fails on a figure.
#
# Usage: scripts/bench.sh [ceiling|cache|timeline|subject-date|search|notify|user-events|latency|scaling|prefetch ...]   (default: all)
#   BENCH_QUICK=1            a ~2-minute smoke run
#   BENCH_EVENTS=N           events pre-filled for the ceiling/cache drain (default 1000000)
#   BENCH_ROUNDS=N           interleaved rounds of those drains, medians reported (default 3)
#   BENCH_SUBJECT_DATE_EVENTS=N  chii_subjects updates of the subject-date catch-up (default 200000)
#   BENCH_NOTIFY_EVENTS=N    notify.v1 messages of the notify catch-up (default 100000)
#   BENCH_USER_EVENTS_EVENTS=N   mixed chii_members updates of the user-events catch-up (default 50000)
#   BENCH_LATENCY_SECONDS=S  seconds of each fixed-rate latency run (default 60)
#   BENCH_PERF_OUT=FILE      also `perf record` the cache-invalidation drain into FILE
#   BENCH_NO_BUILD=1         use the release binaries as they are
# Needs `make up` (the Makefile target runs it first).
source "$(dirname "$0")/lib.sh"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$STATE_DIR/target}
CARGO=${CARGO:-cargo}
cd "$REPO_ROOT"

# Debian's kcat links librdkafka 2.0.2, which fails tansu's handshake; the confluent-kafka wheel
# bundles a current librdkafka that kcat loads instead.
KCAT_LIB_DIR=$STATE_DIR/kcat-lib
install_tools() {
    local missing=()
    command -v kcat >/dev/null 2>&1 || missing+=(kcat)
    command -v gnuplot >/dev/null 2>&1 || missing+=(gnuplot-nox)
    command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
    if ((${#missing[@]})); then
        say "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; } \
            || warn "apt-get install ${missing[*]} failed; those figures/plots will be missing"
    fi
    if [[ ! -e $KCAT_LIB_DIR/librdkafka.so.1 ]]; then
        python3 -c 'import confluent_kafka' 2>/dev/null \
            || python3 -m pip install -q confluent-kafka \
            || warn "pip install confluent-kafka failed; kcat will use Debian's librdkafka"
        local lib
        lib=$(python3 - <<'PY' 2>/dev/null
import glob, os, confluent_kafka
d = os.path.dirname(confluent_kafka.__file__) + ".libs"
print((glob.glob(os.path.join(d, "librdkafka-*.so.1")) or [""])[0])
PY
)
        if [[ -n $lib ]]; then
            mkdir -p "$KCAT_LIB_DIR"
            ln -sf "$lib" "$KCAT_LIB_DIR/librdkafka.so.1"
        fi
    fi
    [[ -e $KCAT_LIB_DIR/librdkafka.so.1 ]] && export KCAT_LD_LIBRARY_PATH=$KCAT_LIB_DIR
    return 0
}

install_tools
if [[ -z ${BENCH_NO_BUILD:-} ]]; then
    say "building release binaries"
    $CARGO build --release --workspace --bins
fi

# Decode: the schema crate's criterion bench (its JSON lands in $CARGO_TARGET_DIR/criterion).
if [[ $# -eq 0 ]]; then
    if [[ -n ${BENCH_QUICK:-} && ${BENCH_QUICK:-} != 0 ]]; then times=(--warm-up-time 0.5 --measurement-time 1)
    else times=(--warm-up-time 1 --measurement-time 4); fi
    say "decode: cargo bench -p cdc-schemas --bench decode"
    $CARGO bench -q -p cdc-schemas --bench decode -- "${times[@]}" 2>&1 | grep -Ev '^(Gnuplot|Benchmarking)' || warn "decode bench failed"
fi

mkdir -p "$REPO_ROOT/bench"
say "running the harness (logs of the workers: $LOG_DIR/bench)"
"$CARGO_TARGET_DIR/release/bench" "$@"
