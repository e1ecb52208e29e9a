#!/usr/bin/env bash
# Local infrastructure: the tansu broker, the schema-registry stand-in, Redis, MariaDB and
# Meilisearch, and moto's S3 server.
#
# Usage: scripts/infra.sh up|down|status
#   up      install what is missing, start what is not running, wait until each answers
#   down    stop what `up` started (broker, registry stand-in, Meilisearch, S3); Redis and MariaDB
#           are the machine's services and stay up
#   status  one line per service; exit 1 if any is down
source "$(dirname "$0")/lib.sh"

broker_ok() { python3 "$REPO_ROOT/scripts/kafka_ping.py" "$BROKER_HOST" "$BROKER_PORT" >/dev/null 2>&1; }
registry_ok() { curl -fsS -m 2 "http://127.0.0.1:$REGISTRY_PORT/subjects" >/dev/null 2>&1; }
redis_ok() { [[ $(timeout 3 redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }
meilisearch_ok() { [[ $(curl -fsS -m 2 "http://127.0.0.1:$MEILISEARCH_PORT/health" 2>/dev/null) == *'"available"'* ]]; }
# moto's dashboard page: constant size (`/moto-api/data.json` dumps every stored object).
s3_ok() { [[ $(curl -sS -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$S3_PORT/moto-api/" 2>/dev/null) == 200 ]]; }
mysql_ok() { mariadb -h 127.0.0.1 -P "$MYSQL_PORT" -uroot --connect-timeout=2 -e 'select 1' >/dev/null 2>&1; }
# As root through the server's socket (unix_socket authentication on a fresh Debian install).
mysql_socket_ok() { mariadb -uroot --connect-timeout=2 -e 'select 1' >/dev/null 2>&1; }

# refuse_foreign_port PORT SERVICE: fail clearly when another program holds our port.
refuse_foreign_port() {
    port_open "$1" || return 0
    die "port $1 is taken by '$(port_owner "$1")', which is not a working $2; stop it or set CDC_${2^^}_PORT"
}

start_broker() {
    broker_ok && return
    refuse_foreign_port "$BROKER_PORT" broker
    [[ -x $BIN_DIR/tansu ]] || die "broker binary missing at $BIN_DIR/tansu: run scripts/install.sh"
    # tansu reads any ./.env in its working directory: give it an empty one of its own.
    local cwd=$RUN_DIR/tansu-cwd
    mkdir -p "$cwd"
    (cd "$cwd" && exec setsid "$BIN_DIR/tansu" broker \
        --listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
        --advertised-listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
        --storage-engine memory://tansu/ >"$LOG_DIR/tansu.log" 2>&1 </dev/null) &
    echo $! >"$RUN_DIR/tansu.pid"
    wait_until 10 broker broker_ok \
        || die "tansu did not answer on $BROKER_HOST:$BROKER_PORT within 10 s; log: $LOG_DIR/tansu.log"
}

start_registry() {
    registry_ok && return
    refuse_foreign_port "$REGISTRY_PORT" registry
    (exec setsid python3 "$REPO_ROOT/fixtures/registry_stand_in.py" --port "$REGISTRY_PORT" \
        --schemas "$REPO_ROOT/fixtures/debezium/registry.json" >"$LOG_DIR/registry.log" 2>&1 </dev/null) &
    echo $! >"$RUN_DIR/registry.pid"
    wait_until 10 registry registry_ok \
        || die "schema-registry stand-in did not answer on :$REGISTRY_PORT within 10 s; log: $LOG_DIR/registry.log"
}

start_redis() {
    redis_ok && return
    refuse_foreign_port "$REDIS_PORT" redis
    say "Redis is down; starting it"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null \
        || die "redis-server failed to start; see /var/log/redis/ci.log"
    wait_until 10 redis redis_ok || die "Redis did not answer on :$REDIS_PORT within 10 s"
}

start_mysql() {
    mysql_ok && return
    if ! mysql_socket_ok; then
        refuse_foreign_port "$MYSQL_PORT" mysql
        say "MariaDB is down; starting it"
        # The directory of its socket and pid file, made by the init system where one runs.
        install -d -o mysql -g mysql /run/mysqld 2>/dev/null || true
        # As the mysql user, as the distribution's service does (mariadbd refuses root).
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql \
            || die "mariadbd failed to start"
        wait_until 30 mysql mysql_socket_ok || die "MariaDB did not answer on its socket within 30 s"
    fi
    mysql_ok && return
    allow_local_root
    wait_until 30 mysql mysql_ok || die "MariaDB did not answer on :$MYSQL_PORT within 30 s"
}

# allow_local_root: the tests connect as root without a password over TCP (127.0.0.1), as the
# development machines are set up. A fresh Debian or Ubuntu MariaDB lets root in through the
# socket only (unix_socket); when the server listens on the loopback only, root also gets an
# empty password on it. A server reachable from elsewhere is left alone, with a message.
allow_local_root() {
    local listening
    listening=$(ss -Hltn "sport = :$MYSQL_PORT" 2>/dev/null | awk '{print $4}')
    if [[ -z $listening ]] || grep -qvE '^(127\.0\.0\.1|\[::1\]|\[::ffff:127\.0\.0\.1\]):' <<<"$listening"; then
        die "MariaDB refuses root without a password on 127.0.0.1:$MYSQL_PORT, and listens beyond the loopback (${listening//$'\n'/ }): give the tests a local root (MYSQL_USER/MYSQL_PASS) by hand"
    fi
    say "MariaDB: root may log in without a password from this machine (it listens on the loopback only)"
    mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('')" \
        || die "could not let root log in without a password on 127.0.0.1"
}

# Meilisearch on $MEILISEARCH_PORT with the local master key (passed in its environment, so it is
# in neither the command line nor the log), its database and dump/snapshot dirs under
# $STATE_DIR/meilisearch (its working directory).
start_meilisearch() {
    meilisearch_ok && return
    refuse_foreign_port "$MEILISEARCH_PORT" meilisearch
    local bin; bin=$(meilisearch_bin) || die "$MEILISEARCH_MISSING"
    local dir=$STATE_DIR/meilisearch
    mkdir -p "$dir"
    (cd "$dir" && MEILI_MASTER_KEY=$MEILISEARCH_MASTER_KEY exec setsid "$bin" \
        --db-path "$dir/data.ms" --http-addr "127.0.0.1:$MEILISEARCH_PORT" \
        --env development --no-analytics >"$LOG_DIR/meilisearch.log" 2>&1 </dev/null) &
    echo $! >"$RUN_DIR/meilisearch.pid"
    wait_until 30 meilisearch meilisearch_ok \
        || die "Meilisearch did not answer on :$MEILISEARCH_PORT within 30 s; log: $LOG_DIR/meilisearch.log"
}

# moto's S3 server on $S3_PORT, in memory (a restart forgets every bucket).
start_s3() {
    s3_ok && return
    refuse_foreign_port "$S3_PORT" s3
    (exec setsid "$TOOLS_VENV/bin/python" -m moto.server -H 127.0.0.1 -p "$S3_PORT" >"$LOG_DIR/moto.log" 2>&1 </dev/null) &
    echo $! >"$RUN_DIR/moto.pid"
    wait_until 30 s3 s3_ok || die "moto's S3 server did not answer on :$S3_PORT within 30 s; log: $LOG_DIR/moto.log"
}

stop_pid() {
    local name=$1
    pid_alive "$name" || { rm -f "$RUN_DIR/$name.pid"; return; }
    local pid; pid=$(cat "$RUN_DIR/$name.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$RUN_DIR/$name.pid"
}

line() { printf '%-16s %-5s %s\n' "$1" "$2" "$3"; }

status() {
    local bad=0
    if broker_ok; then line broker up "tansu on $BROKER_HOST:$BROKER_PORT (log $LOG_DIR/tansu.log)"
    else line broker DOWN "nothing answers the Kafka protocol on :$BROKER_PORT"; bad=1; fi
    if registry_ok; then line schema-registry up "stand-in on http://127.0.0.1:$REGISTRY_PORT"
    else line schema-registry DOWN ":$REGISTRY_PORT"; bad=1; fi
    if redis_ok; then line redis up "127.0.0.1:$REDIS_PORT"
    else line redis DOWN ":$REDIS_PORT"; bad=1; fi
    if mysql_ok; then line mariadb up "127.0.0.1:$MYSQL_PORT"
    else line mariadb DOWN ":$MYSQL_PORT"; bad=1; fi
    if meilisearch_ok; then line meilisearch up "http://127.0.0.1:$MEILISEARCH_PORT (local master key; log $LOG_DIR/meilisearch.log)"
    else line meilisearch DOWN "nothing answers GET /health on :$MEILISEARCH_PORT"; bad=1; fi
    if s3_ok; then line s3 up "moto on http://127.0.0.1:$S3_PORT (log $LOG_DIR/moto.log)"
    else line s3 DOWN "moto does not answer on :$S3_PORT"; bad=1; fi
    return $bad
}

case ${1:-} in
up)
    "$REPO_ROOT/scripts/install.sh"
    start_redis
    start_mysql
    start_broker
    start_registry
    start_meilisearch
    start_s3
    status
    ;;
down)
    stop_pid registry
    stop_pid tansu
    stop_pid meilisearch
    stop_pid moto
    say "broker, registry stand-in, Meilisearch and S3 stopped (Redis and MariaDB are machine services; left running)"
    ;;
status) status ;;
*) die "usage: $0 up|down|status" ;;
esac
