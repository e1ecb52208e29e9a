#!/usr/bin/env python3
"""Generates helm/bangumi-cdc/files/families.json from topics/families/*.toml.

topics/families/*.toml is the one place for each family's topics, consumer group, DLQ and
partition count. The chart reads the generated JSON (committed, so `helm install` needs no
Python) instead of holding a second hand-written copy; scripts/helm-test.sh runs this with
--check so a stale file fails the tests.

Usage:
    scripts/helm-families.py           # (re)write the file
    scripts/helm-families.py --check   # exit 1 with a diff if the file is not up to date
"""

import difflib
import json
import pathlib
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE_DIR = ROOT / "topics" / "families"
OUTPUT = ROOT / "helm" / "bangumi-cdc" / "files" / "families.json"

REQUIRED = {"family": str, "group": str, "dlq": str, "partitions": int, "topics": list, "stores": list}
STORES = {"redis", "mysql", "meilisearch", "s3"}


def load_families() -> dict:
    families = {}
    files = sorted(SOURCE_DIR.glob("*.toml"))
    if not files:
        sys.exit(f"error: no family files in {SOURCE_DIR}")
    for path in files:
        with path.open("rb") as f:
            data = tomllib.load(f)
        for key, kind in REQUIRED.items():
            if not isinstance(data.get(key), kind):
                sys.exit(f"error: {path.relative_to(ROOT)}: `{key}` missing or not a {kind.__name__}")
        name = data["family"]
        if name != path.stem:
            sys.exit(f"error: {path.relative_to(ROOT)}: family = {name!r} but the file is {path.name}")
        unknown = set(data["stores"]) - STORES
        if unknown:
            sys.exit(f"error: {path.relative_to(ROOT)}: unknown stores {sorted(unknown)} (known: {sorted(STORES)})")
        if data["partitions"] < 1:
            sys.exit(f"error: {path.relative_to(ROOT)}: partitions must be >= 1")
        families[name] = {
            "family": name,
            "description": data.get("description", ""),
            "group": data["group"],
            "dlq": data["dlq"],
            "partitions": data["partitions"],
            "encoding": data.get("encoding", "auto"),
            "topics": list(data["topics"]),
            "service_topics": list(data.get("service_topics", [])),
            "stores": list(data["stores"]),
            "migrate": bool(data.get("migrate", False)),
            "batch": data.get("batch", {}),
            "retry": data.get("retry", {}),
        }
    groups = [f["group"] for f in families.values()]
    if len(set(groups)) != len(groups):
        sys.exit(f"error: consumer groups are not distinct across families: {groups}")
    return families


def render() -> str:
    document = {
        "generated_by": "scripts/helm-families.py from topics/families/*.toml; do not edit",
        "families": load_families(),
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main() -> int:
    wanted = render()
    if "--check" in sys.argv[1:]:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != wanted:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True), wanted.splitlines(keepends=True),
                str(OUTPUT.relative_to(ROOT)) + " (committed)", "generated from topics/families/*.toml",
            )
            sys.stderr.write("".join(diff))
            sys.stderr.write(
                f"error: {OUTPUT.relative_to(ROOT)} is stale vs topics/families/; "
                "run scripts/helm-families.py and commit the result\n"
            )
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(wanted)
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(json.loads(wanted)['families'])} families)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
