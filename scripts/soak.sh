#!/usr/bin/env bash
# `make soak`: the reliability suite (tests/reliability.rs, tests/reliability_broker.rs) SOAK_RUNS
# times in a row (default 3) with RELIABILITY_SCALE times the event counts of `make test`
# (default 3), then every fuzz target for FUZZ_SECONDS each (default 300; 0 skips fuzzing).
# Prints one line per scenario and run (events, dead letters, seconds, result) and fails if any
# scenario failed in any run. Per-run nextest output: $LOG_DIR/soak-<pid>-run-N.log.
#
# Usage: make soak
#        SOAK_RUNS=1 RELIABILITY_SCALE=10 FUZZ_SECONDS=0 bash scripts/soak.sh
source "$(dirname "$0")/lib.sh"

SOAK_RUNS=${SOAK_RUNS:-3}
export RELIABILITY_SCALE=${RELIABILITY_SCALE:-3}
FUZZ_SECONDS=${FUZZ_SECONDS:-300}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$STATE_DIR/target}
cd "$REPO_ROOT"

SCENARIOS=(
    kill_9_at_random_points
    kill_9_the_timeline_at_random_points
    redis_outage_of_20s
    mariadb_outage_of_20s_for_the_timeline
    broker_restart_of_20s
    rebalance_1_3_1_under_load
    poison_interleaved_with_good_events
    duplicates_redeliveries_and_an_old_dlq_replay_change_nothing
    secrets_and_payloads_stay_out_of_logs
)

say "building the workers and the suite"
cargo build --workspace --bins
cargo nextest run -p fleet-harness --test reliability --test reliability_broker --no-run

reports=()
failed=0
for run in $(seq 1 "$SOAK_RUNS"); do
    report=$LOG_DIR/soak-$$-run-$run.report
    log=$LOG_DIR/soak-$$-run-$run.log
    : >"$report"
    reports+=("$report")
    say "reliability run $run of $SOAK_RUNS (RELIABILITY_SCALE=$RELIABILITY_SCALE; log $log)"
    started=$SECONDS
    if RELIABILITY_REPORT=$report cargo nextest run -p fleet-harness \
        --test reliability --test reliability_broker --no-fail-fast >"$log" 2>&1; then
        say "run $run passed in $((SECONDS - started)) s"
    else
        warn "run $run failed after $((SECONDS - started)) s (see $log)"
        failed=1
    fi
done

say "per-scenario summary"
printf '%-62s %4s %8s %6s %8s %s\n' scenario run events dlq seconds result
for scenario in "${SCENARIOS[@]}"; do
    for run in $(seq 1 "$SOAK_RUNS"); do
        line=$(grep -E "scenario=$scenario " "${reports[$((run - 1))]}" | tail -n1 || true)
        if [[ -z $line ]]; then
            printf '%-62s %4s %8s %6s %8s %s\n' "$scenario" "$run" - - - FAIL
            failed=1
            continue
        fi
        field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
        printf '%-62s %4s %8s %6s %8s %s\n' "$scenario" "$run" "$(field events)" \
            "$(field dead_letters)" "$(field seconds)" "$(field result)"
    done
done

if ((FUZZ_SECONDS > 0)); then
    say "fuzzing every target for $FUZZ_SECONDS s each"
    FUZZ_SECONDS=$FUZZ_SECONDS bash scripts/fuzz.sh || failed=1
fi

((failed == 0)) || die "soak failed"
say "soak passed: $SOAK_RUNS reliability runs at scale $RELIABILITY_SCALE, fuzzing ${FUZZ_SECONDS}s per target"
