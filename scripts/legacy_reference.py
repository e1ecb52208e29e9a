#!/usr/bin/env python3
"""A stand-in for the legacy cache invalidation (server-private's `bin/mq.ts`): consumes the
Debezium topics and deletes Redis cache keys by the legacy rules, one DEL per record, so that
shadow mode and the parity harness have a legacy worker to compare against without Node.

The rules are stated here on their own, as the legacy worker applies them, including where the
fleet deliberately differs (README, "Where we deliberately differ from server-private"):
- a record without a key is dropped (`if (!message.key) return`): `chii_friends`, which has no
  primary key, never invalidates anything;
- an id column missing from the key is rendered `undefined` (`DEL sbj:v2:item:undefined`);
- snapshot reads (`op = r`) and tables without a rule do nothing.

Usage:
  legacy_reference.py --brokers 127.0.0.1:9092 --group G (--topics T1,T2 | --topic-prefix P)
                      [--redis-url redis://127.0.0.1:6379/0] [--key-prefix K]
                      [--diverge KEY]... [--exit-when-idle SECONDS] [--max-records N]

  --topics        comma-separated topic names (as in the broker)
  --topic-prefix  prefix of the family's topics: subscribes to `<prefix>debezium.chii.bangumi.<t>`
                  for every table with a rule
  --key-prefix    put before every key (isolates tests; production keys have none)
  --diverge KEY   a deliberate divergence: on the first record that deletes anything, also delete
                  KEY (after --key-prefix); repeatable
  --exit-when-idle N  exit 0 once no record came for N seconds (after the partitions are assigned)
  --max-records N     exit 0 after N records (any topic, tombstones included)

Each record is committed (synchronously) once its DELs are done, so the group's committed offsets
say how far it got. Runs until SIGTERM/SIGINT (exits 0, offsets committed). Needs the PyPI
packages `confluent-kafka` and `redis`: scripts/install.sh installs them into its tools venv,
which the script runs under when started by another Python.
"""
import argparse
import json
import os
import signal
import sys
import time

try:
    from confluent_kafka import Consumer, KafkaException
    import redis
except ImportError:
    # scripts/install.sh installs the clients into the tools venv (scripts/lib.sh's TOOLS_VENV):
    # started by another Python, run again under the venv's.
    VENV_PYTHON = os.path.join(
        os.environ.get("CDC_STATE_DIR", "/var/tmp/bangumi-cdc"), "tools-venv", "bin", "python"
    )
    if os.path.exists(VENV_PYTHON) and sys.prefix == sys.base_prefix:
        os.execv(VENV_PYTHON, [VENV_PYTHON, *sys.argv])
    sys.exit("legacy_reference.py: needs the PyPI packages confluent-kafka and redis (make up installs them)")

UPDATE_DELETE = ("u", "d")
ALL_CHANGES = ("c", "u", "d")

# table -> (operations, where the id comes from, key formats). ("key", column): the message key;
# ("row", column): before.column, else after.column; a zero or missing id does nothing.
RULES = {
    "chii_blog_entry": (UPDATE_DELETE, ("key", "entry_id"), ["blog:v3:slim:{id}"]),
    "chii_characters": (UPDATE_DELETE, ("key", "crt_id"), ["crt:v2:slim:{id}"]),
    "chii_persons": (UPDATE_DELETE, ("key", "prsn_id"), ["prsn:v3:slim:{id}"]),
    "chii_index": (UPDATE_DELETE, ("key", "idx_id"), ["idx:v6:slim:{id}"]),
    "chii_groups": (UPDATE_DELETE, ("key", "grp_id"), ["grp:v3:slim:{id}"]),
    "chii_group_topics": (UPDATE_DELETE, ("key", "grp_tpc_id"), ["grp:topic:{id}"]),
    "chii_group_members": (ALL_CHANGES, ("row", "gmb_uid"), ["user:groups:{id}"]),
    "chii_subjects": (UPDATE_DELETE, ("key", "subject_id"), ["sbj:v2:item:{id}", "sbj:v3:slim:{id}"]),
    "chii_subject_fields": (UPDATE_DELETE, ("key", "field_sid"), ["sbj:v2:item:{id}", "sbj:v3:slim:{id}"]),
    "chii_subject_topics": (UPDATE_DELETE, ("key", "sbj_tpc_id"), ["sbj:topic:{id}"]),
    "chii_episodes": (UPDATE_DELETE, ("key", "ep_id"), ["sbj:v2:ep:{id}"]),
    "chii_members": (UPDATE_DELETE, ("key", "uid"), ["user:v2:slim:{id}"]),
    "chii_memberfields": (ALL_CHANGES, ("key", "uid"), ["user:privacy:{id}"]),
}
# Consumed, never acted on: the table has no primary key, so its records have a null key.
KEYLESS_TABLES = ["chii_friends"]


def payload(raw):
    """A JSON converter's document, without the `schema`/`payload` envelope if it has one."""
    doc = json.loads(raw)
    if isinstance(doc, dict) and set(doc) == {"schema", "payload"}:
        return doc["payload"]
    return doc


def keys_of(key_bytes, value_bytes):
    """The keys the legacy worker deletes for one record (without the key prefix)."""
    if not key_bytes or value_bytes is None:
        return []
    value = payload(value_bytes)
    if not isinstance(value, dict) or "op" not in value:
        return []
    rule = RULES.get((value.get("source") or {}).get("table"))
    if rule is None or value["op"] not in rule[0]:
        return []
    where, column = rule[1]
    if where == "key":
        key = payload(key_bytes) or {}
        found = key.get(column)
        ident = "undefined" if found is None else found
    else:
        row = value.get("before") or {}
        ident = row.get(column) or (value.get("after") or {}).get(column)
        if not ident:
            return []
    return [fmt.replace("{id}", str(ident)) for fmt in rule[2]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", default="127.0.0.1:9092")
    parser.add_argument("--group", required=True)
    parser.add_argument("--topics", default="")
    parser.add_argument("--topic-prefix", default=None)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--key-prefix", default="")
    parser.add_argument("--diverge", action="append", default=[])
    parser.add_argument("--exit-when-idle", type=float, default=None)
    parser.add_argument("--max-records", type=int, default=None)
    args = parser.parse_args()

    topics = [t for t in args.topics.split(",") if t]
    if args.topic_prefix is not None:
        topics += [f"{args.topic_prefix}debezium.chii.bangumi.{t}" for t in sorted([*RULES, *KEYLESS_TABLES])]
    if not topics:
        parser.error("give --topics or --topic-prefix")

    store = redis.Redis.from_url(args.redis_url)
    store.ping()
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    })
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    consumer.subscribe(topics)

    diverge = [args.key_prefix + k for k in args.diverge]
    seen = 0
    last_record = time.monotonic()
    try:
        while not stopping:
            message = consumer.poll(0.2)
            if message is None:
                idle = time.monotonic() - last_record
                if args.exit_when_idle is not None and consumer.assignment() and idle >= args.exit_when_idle:
                    break
                continue
            if message.error():
                print(f"legacy_reference: {message.error()}", file=sys.stderr)
                continue
            last_record = time.monotonic()
            try:
                keys = [args.key_prefix + k for k in keys_of(message.key(), message.value())]
            except (ValueError, AttributeError, TypeError) as error:
                # The legacy worker logs and commits anyway.
                print(f"legacy_reference: {message.topic()}@{message.partition()}:{message.offset()}: {error}", file=sys.stderr)
                keys = []
            if keys and diverge:
                keys, diverge = keys + diverge, []
            for key in keys:
                store.delete(key)
            consumer.commit(message=message, asynchronous=False)
            seen += 1
            if args.max_records is not None and seen >= args.max_records:
                break
    except KafkaException as error:
        print(f"legacy_reference: {error}", file=sys.stderr)
        return 1
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
