#!/usr/bin/env python3
"""Evaluates the chart's alert rules against metrics scraped from running workers (tests/alerts.rs
drives the workers and calls this).

Usage: alerts_eval.py SCRAPES.json [--set KEY=VALUE ...] [--absent 'metric{label="value"}' ...]

SCRAPES.json: {"scrapes": [{"t": <seconds>, "targets": [{"labels": {...}, "text": <a /metrics
body>}]}]}: each scrape's time on the evaluation timeline, and each target's body with the labels
Prometheus would add to its series (namespace, pod, …).

The PrometheusRule is rendered from helm/bangumi-cdc (`helm template`, namespace `bangumi`,
`metrics.prometheusRule.enabled=true` and the --set values). Then every rule is checked against
the scraped series: each metric it selects is exported, with the type the expression needs (a
counter under increase/rate, a gauge elsewhere), each label it matches on exists on the metric,
and each selector matches a series in some scrape (--absent names the matchers that may match
none: outcomes the run did not produce). Finally each rule is evaluated at every scrape's time.

Prints {"alerts": {alert: [indexes of the scrapes at which its expression is non-empty]}} and
exits 0, or prints the problems and exits 1.

The evaluator covers the PromQL the rules use: selectors (=, !=, =~, !~) with Prometheus' 5-minute
lookback, ranges, subqueries (steps aligned as Prometheus aligns them), sum/max/min/avg/count
by (…), comparisons and arithmetic between vectors and scalars (one-to-one matching on all labels
but the name), and/unless/or, time(), increase/rate (without Prometheus' extrapolation to the
window's edges: the same sign, a smaller value) and deriv (least squares). A rule's `for` is not
evaluated: the scrapes are seconds apart.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import promql_parser as pp
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "bangumi-cdc"
HELM = pathlib.Path(os.environ.get("CDC_STATE_DIR", "/var/tmp/bangumi-cdc")) / "bin" / "helm"
NAMESPACE = "bangumi"
LOOKBACK = 300.0
COUNTER_FUNCTIONS = {"increase", "rate", "irate", "resets"}
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")


class Series:
    """Every scraped series: labels (with __name__) → [(t, value)], and each metric's TYPE."""

    def __init__(self, scrapes: list):
        self.samples: dict[frozenset, list] = {}
        self.types: dict[str, str] = {}
        for scrape in scrapes:
            for target in scrape["targets"]:
                for line in target["text"].splitlines():
                    if line.startswith("# TYPE "):
                        _, _, name, kind = line.split(maxsplit=3)
                        self.types[name] = kind
                        continue
                    if not line.strip() or line.startswith("#"):
                        continue
                    found = SAMPLE.match(line)
                    if not found:
                        raise ValueError(f"not an exposition line: {line!r}")
                    labels = dict(LABEL.findall(found.group(2) or ""))
                    labels.update(target["labels"])
                    labels["__name__"] = found.group(1)
                    key = frozenset(labels.items())
                    self.samples.setdefault(key, []).append((scrape["t"], float(found.group(3))))

    def type_of(self, name: str) -> str | None:
        if name in self.types:
            return self.types[name]
        base = HISTOGRAM_SUFFIX.sub("", name)
        return self.types.get(base) if base != name else None

    def select(self, node) -> list:
        """(labels, samples) of the series a VectorSelector matches."""
        out = []
        for key, samples in self.samples.items():
            labels = dict(key)
            if node.name and labels["__name__"] != node.name:
                continue
            if all(matches(m, labels.get(m.name, "")) for m in node.matchers.matchers):
                out.append((labels, samples))
        return out


def matches(matcher, value: str) -> bool:
    op = matcher.op
    if op == pp.MatchOp.Equal:
        return value == matcher.value
    if op == pp.MatchOp.NotEqual:
        return value != matcher.value
    full = re.fullmatch(matcher.value, value) is not None
    return full if op == pp.MatchOp.Re else not full


def without_name(labels: dict) -> dict:
    return {k: v for k, v in labels.items() if k != "__name__"}


def signature(labels: dict) -> frozenset:
    return frozenset(without_name(labels).items())


def slope(points: list) -> float:
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def increase(points: list) -> float:
    total, previous = 0.0, points[0][1]
    for _, value in points[1:]:
        total += value - previous if value >= previous else value  # a reset starts from 0
        previous = value
    return total


COMPARE = {">": lambda a, b: a > b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b,
           "<=": lambda a, b: a <= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
ARITHMETIC = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
              "/": lambda a, b: a / b if b else float("nan")}
AGGREGATE = {"sum": sum, "max": max, "min": min, "count": len, "avg": lambda vs: sum(vs) / len(vs)}


class Evaluator:
    def __init__(self, series: Series):
        self.series = series

    def eval(self, node, t: float):
        """A float (scalar), a list of (labels, value) (instant vector), or a list of
        (labels, [(t, v)]) tagged ("matrix", …)."""
        if isinstance(node, pp.NumberLiteral):
            return float(node.val)
        if isinstance(node, pp.ParenExpr):
            return self.eval(node.expr, t)
        if isinstance(node, pp.VectorSelector):
            out = []
            for labels, samples in self.series.select(node):
                recent = [v for ts, v in samples if t - LOOKBACK < ts <= t]
                if recent:
                    out.append((labels, recent[-1]))
            return out
        if isinstance(node, pp.MatrixSelector):
            width = node.range.total_seconds()
            return ("matrix", [(labels, [(ts, v) for ts, v in samples if t - width < ts <= t])
                               for labels, samples in self.series.select(node.vector_selector)])
        if isinstance(node, pp.SubqueryExpr):
            width, step = node.range.total_seconds(), node.step.total_seconds()
            first = (int((t - width) // step) + 1) * step
            rows: dict[frozenset, tuple] = {}
            at = first
            while at <= t:
                for labels, value in self.eval(node.expr, at):
                    rows.setdefault(signature(labels), (without_name(labels), []))[1].append((at, value))
                at += step
            return ("matrix", list(rows.values()))
        if isinstance(node, pp.Call):
            name = node.func.name
            if name == "time":
                return float(t)
            _, rows = self.eval(node.args[0], t)
            out = []
            for labels, points in rows:
                if len(points) < 2:
                    continue
                if name == "increase":
                    out.append((without_name(labels), increase(points)))
                elif name == "rate":
                    out.append((without_name(labels), increase(points) / node.args[0].range.total_seconds()))
                elif name == "deriv":
                    out.append((without_name(labels), slope(points)))
                else:
                    raise ValueError(f"the evaluator has no function {name}")
            return out
        if isinstance(node, pp.AggregateExpr):
            op = str(node.op)
            if op not in AGGREGATE or (node.modifier is not None and node.modifier.type != pp.AggModifierType.By):
                raise ValueError(f"the evaluator has no aggregation {op} {node.modifier}")
            by = list(node.modifier.labels) if node.modifier is not None else []
            groups: dict[tuple, list] = {}
            for labels, value in self.eval(node.expr, t):
                groups.setdefault(tuple(labels.get(k, "") for k in by), []).append(value)
            return [({k: v for k, v in zip(by, key) if v}, AGGREGATE[op](values)) for key, values in groups.items()]
        if isinstance(node, pp.BinaryExpr):
            return self.binary(str(node.op), self.eval(node.lhs, t), self.eval(node.rhs, t))
        raise ValueError(f"the evaluator has no {type(node).__name__}")

    @staticmethod
    def binary(op: str, lhs, rhs):
        scalar_l, scalar_r = isinstance(lhs, float), isinstance(rhs, float)
        if op in ("and", "unless", "or"):
            right = {signature(labels) for labels, _ in rhs}
            if op == "and":
                return [(l, v) for l, v in lhs if signature(l) in right]
            if op == "unless":
                return [(l, v) for l, v in lhs if signature(l) not in right]
            left = {signature(labels) for labels, _ in lhs}
            return lhs + [(l, v) for l, v in rhs if signature(l) not in left]
        if scalar_l and scalar_r:
            if op in COMPARE:
                raise ValueError("a comparison of two scalars needs `bool`")
            return ARITHMETIC[op](lhs, rhs)
        if op in COMPARE:
            if scalar_r:
                return [(l, v) for l, v in lhs if COMPARE[op](v, rhs)]
            if scalar_l:
                return [(l, v) for l, v in rhs if COMPARE[op](lhs, v)]
            right = {signature(l): v for l, v in rhs}
            return [(l, v) for l, v in lhs if signature(l) in right and COMPARE[op](v, right[signature(l)])]
        if scalar_r:
            return [(without_name(l), ARITHMETIC[op](v, rhs)) for l, v in lhs]
        if scalar_l:
            return [(without_name(l), ARITHMETIC[op](lhs, v)) for l, v in rhs]
        right = {signature(l): v for l, v in rhs}
        return [(without_name(l), ARITHMETIC[op](v, right[signature(l)])) for l, v in lhs if signature(l) in right]


def check_selectors(alert: str, expr, series: Series, absent: set, problems: list) -> None:
    """Each selector's metric exists with the type its use needs, its labels exist, and it
    matches a series (unless listed in `absent`)."""

    def visit(node, counter: bool):
        if isinstance(node, pp.VectorSelector):
            kind = series.type_of(node.name)
            if kind is None:
                problems.append(f"{alert}: {node.name} is in no scrape")
                return
            want = "counter" if counter else "gauge"
            if kind != want:
                problems.append(f"{alert}: {node.name} is a {kind}, used as a {want}")
            own = [dict(k) for k in series.samples if dict(k)["__name__"] == node.name]
            for m in node.matchers.matchers:
                if not any(m.name in labels for labels in own):
                    problems.append(f"{alert}: {node.name} has no label {m.name}")
                    return
            if series.select(node):
                return
            # which matcher no series meets: allowed only when --absent names it
            for m in node.matchers.matchers:
                seen = sorted({labels.get(m.name, "") for labels in own})
                if not any(matches(m, value) for value in seen) \
                        and f'{node.name}{{{m.name}="{m.value}"}}' not in absent:
                    problems.append(f"{alert}: {node.name}{{{m.name}={m.value!r}}} matches no series (seen: {seen})")
            return
        if isinstance(node, pp.Call):
            for arg in node.args:
                visit(arg, node.func.name in COUNTER_FUNCTIONS)
            return
        for child in ("expr", "lhs", "rhs", "vector_selector"):
            if hasattr(node, child) and getattr(node, child) is not None:
                visit(getattr(node, child), counter)

    visit(expr, False)


def main() -> int:
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    data = json.loads(pathlib.Path(args[0]).read_text())
    sets, absent = [], set()
    rest = args[1:]
    while rest:
        flag, value, rest = rest[0], rest[1], rest[2:]
        if flag == "--set":
            sets += ["--set", value]
        elif flag == "--absent":
            absent.add(value)
        else:
            sys.exit(f"unknown argument {flag}")
    rendered = subprocess.run(
        [str(HELM), "template", "cdc", str(CHART), "--namespace", NAMESPACE,
         "--show-only", "templates/prometheusrule.yaml", "--set", "metrics.prometheusRule.enabled=true", *sets],
        check=True, capture_output=True, text=True).stdout
    rule = yaml.safe_load(rendered)
    series = Series(data["scrapes"])
    evaluator = Evaluator(series)
    problems, fired = [], {}
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            expr = pp.parse(r["expr"])
            check_selectors(r["alert"], expr, series, absent, problems)
            fired[r["alert"]] = [i for i, scrape in enumerate(data["scrapes"]) if evaluator.eval(expr, scrape["t"])]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(json.dumps({"alerts": fired}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
