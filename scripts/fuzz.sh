#!/usr/bin/env bash
# Fuzzes every decoder entry point of the schemas crate (schemas/fuzz/: decode_json,
# decode_json_schema, decode_avro, decode_auto) and the wiki parser (wiki/fuzz/: parse_wiki) for
# FUZZ_SECONDS each (default 30) and fails on the first crash, leak or timeout. Installs cargo-fuzz
# if missing.
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer=address, sancov); no nightly toolchain
# can be installed from the registries here, so the stable toolchain is run with
# RUSTC_BOOTSTRAP=1, which unlocks them. Crash inputs land in <crate>/fuzz/artifacts/<target>/.
#
# Usage: scripts/fuzz.sh [target ...]     # default: all targets
#        FUZZ_SECONDS=300 scripts/fuzz.sh decode_avro
source "$(dirname "$0")/lib.sh"

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
SCHEMAS_FUZZ_DIR=$REPO_ROOT/schemas/fuzz
WIKI_FUZZ_DIR=$REPO_ROOT/wiki/fuzz
FIXTURES=$REPO_ROOT/fixtures/debezium
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=$STATE_DIR/fuzz-target

if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    cargo install --locked cargo-fuzz --version 0.13.2 >/dev/null || die "cargo install cargo-fuzz failed"
fi

# Seed a schemas target's corpus with the real fixture records (value only: first byte 0).
seed() {
    local target=$1 files=$2 dir=$SCHEMAS_FUZZ_DIR/corpus/$1
    mkdir -p "$dir"
    command -v python3 >/dev/null || { warn "python3 missing: $target starts from an empty corpus"; return; }
    python3 - "$dir" $files <<'PY'
import base64, hashlib, json, os, sys
out = sys.argv[1]
for path in sys.argv[2:]:
    for line in open(path, encoding="utf-8"):
        d = json.loads(line)
        v = base64.b64decode(d["value_b64"]) if d.get("value_b64") else (d.get("value") or "").encode()
        data = b"\0" + v
        with open(os.path.join(out, "fixture-" + hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
            f.write(data)
PY
}

# Seed parse_wiki's corpus with the wiki crate's conformance inputs.
seed_wiki() {
    local dir=$WIKI_FUZZ_DIR/corpus/parse_wiki
    mkdir -p "$dir"
    cp "$REPO_ROOT"/wiki/tests/conformance/valid/*.wiki "$REPO_ROOT"/wiki/tests/conformance/invalid/*.wiki "$dir/"
}

targets=("$@")
((${#targets[@]})) || targets=(decode_json decode_json_schema decode_avro decode_auto parse_wiki)

declare -A built # the cargo-fuzz packages built so far
for target in "${targets[@]}"; do
    fuzz_dir=$SCHEMAS_FUZZ_DIR
    case $target in
        decode_json) seed "$target" "$FIXTURES/json.jsonl" ;;
        decode_json_schema) seed "$target" "$FIXTURES/json-schema.jsonl" ;;
        decode_avro) seed "$target" "$FIXTURES/avro.jsonl" ;;
        decode_auto) seed "$target" "$FIXTURES/json.jsonl $FIXTURES/json-schema.jsonl $FIXTURES/avro.jsonl" ;;
        parse_wiki) fuzz_dir=$WIKI_FUZZ_DIR; seed_wiki ;;
        *) die "unknown fuzz target $target" ;;
    esac
    cd "$fuzz_dir"
    if [[ -z ${built[$fuzz_dir]:-} ]]; then
        say "building the fuzz targets of ${fuzz_dir#"$REPO_ROOT"/} (stable + RUSTC_BOOTSTRAP=1)"
        cargo +stable fuzz build >/dev/null 2>&1 || cargo fuzz build || die "fuzz build failed"
        built[$fuzz_dir]=1
    fi
    say "fuzzing $target for ${FUZZ_SECONDS}s"
    cargo +stable fuzz run "$target" -- -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -timeout=10 \
        >"$LOG_DIR/fuzz-$target.log" 2>&1 \
        || { tail -n 40 "$LOG_DIR/fuzz-$target.log" >&2; die "$target crashed: see ${fuzz_dir#"$REPO_ROOT"/}/artifacts/$target/"; }
    grep -E '^Done [0-9]+ runs' "$LOG_DIR/fuzz-$target.log" || true
done
say "fuzzing passed: ${targets[*]}"
