#!/usr/bin/env python3
"""Validates the custom resources of one rendering of helm/bangumi-cdc against the vendored
schemas of helm/crd-schemas/ (kubernetes-validate knows only the core kinds).

Usage: crd_validate.py RENDERED.yaml

Every object whose apiVersion is a custom group the chart uses (keda.sh, monitoring.coreos.com)
must have a schema there and validate against it. Prints each problem and exits 1 when there is
one; prints how many objects were checked otherwise. Needs PyYAML and jsonschema (both in the
kubernetes-validate venv).
"""

import json
import pathlib
import sys

import jsonschema
import yaml

SCHEMAS = pathlib.Path(__file__).resolve().parent.parent / "helm" / "crd-schemas"
CUSTOM_GROUPS = {"keda.sh", "monitoring.coreos.com"}


def schema_file(api_version: str, kind: str) -> pathlib.Path:
    group, version = api_version.split("/", 1)
    return SCHEMAS / f"{group}_{kind.lower()}_{version}.json"


def main() -> int:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    problems, checked = [], 0
    for doc in yaml.safe_load_all(pathlib.Path(sys.argv[1]).read_text()):
        if not doc or "/" not in doc.get("apiVersion", "") or doc["apiVersion"].split("/")[0] not in CUSTOM_GROUPS:
            continue
        where = f"{doc['kind']} {doc.get('metadata', {}).get('name')}"
        path = schema_file(doc["apiVersion"], doc["kind"])
        if not path.exists():
            problems.append(f"{where}: no schema {path.name} in helm/crd-schemas/ for {doc['apiVersion']}")
            continue
        validator = jsonschema.Draft7Validator(json.loads(path.read_text()))
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            at = "/".join(str(p) for p in error.absolute_path)
            problems.append(f"{where}: at /{at}: {error.message}")
        checked += 1
    for problem in problems:
        print(f"  crd: {problem}", file=sys.stderr)
    if not problems:
        print(f"{checked} custom resources valid")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
