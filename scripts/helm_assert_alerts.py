"""Checks of helm_assert.py on the PrometheusRule (metrics.prometheusRule): every expression
parses as PromQL (promql-parser from PyPI, the offline checker: the parser of GreptimeDB's Rust
crate, which also knows every PromQL function), uses only metrics the workers export, with their
labels and label values (read from their source: the doc comment of each `pub const … =
"cdc_…"` / `"scheduler_…"`), and takes its thresholds and durations from the values.

# Layout
- `exported_metrics`: the metrics in the workers' source, with their labels and label values.
- `selectors`: what an expression selects and aggregates by.
- `ALERTS`: each alert, the metrics it must use and the values it follows.
- `check_prometheus_rule`: the checks on one rendering.
"""

import pathlib
import re

import promql_parser

ROOT = pathlib.Path(__file__).resolve().parent.parent
METRIC_SOURCES = (
    ROOT / "workers" / "runtime" / "src" / "observe.rs",
    ROOT / "workers" / "scheduler" / "src" / "daemon.rs",
)
# Prometheus' histogram series beside a histogram's name.
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")

# alert → (metrics it uses, {path in metrics.prometheusRule: where it shows in the rule}):
# "for": the rule's `for`; "window": a range `[value]` in the expression; any other text: the
# expression contains it with `{}` replaced by the value (a comparison with it).
ALERTS = {
    "CdcConsumerLagGrowing": ({"cdc_consumer_lag"},
                              {("lagGrowing", "minLag"): "> {}", ("lagGrowing", "window"): "window",
                               ("lagGrowing", "for"): "for"}),
    "CdcConsumerNoProgress": ({"cdc_consumer_lag", "cdc_messages_total"},
                              {("noProgress", "window"): "window", ("noProgress", "for"): "for"}),
    "CdcPartitionPaused": ({"cdc_paused_partitions"}, {("partitionPaused", "for"): "for"}),
    "CdcCommitErrors": ({"cdc_commits_total"},
                        {("commitErrors", "window"): "window", ("commitErrors", "for"): "for"}),
    "CdcDeadLettering": ({"cdc_messages_total"}, {("deadLetters", "window"): "window"}),
    "CdcDeadLettersPending": ({"cdc_dlq_pending"},
                              {("dlqPending", "threshold"): "> {}", ("dlqPending", "for"): "for"}),
    "CdcDeadLetterWaitingLong": ({"cdc_dlq_oldest_pending_age_seconds"},
                                 {("dlqOldestPendingAgeSeconds",): "> {}"}),
}
SCHEDULER_ALERT = "SchedulerJobNotSucceeding"
SCHEDULER_METRICS = {"scheduler_last_success_timestamp_seconds", "scheduler_period_seconds"}
# The DLQ gauges are the same on every replica: their alerts take the max per family and partition.
DLQ_GAUGE_ALERTS = {"CdcDeadLettersPending", "CdcDeadLetterWaitingLong"}


# Labels Prometheus adds when it scrapes a worker (the Prometheus Operator's target labels).
SCRAPE_LABELS = {"namespace", "pod", "instance", "job", "service", "container", "endpoint"}
# A metric's doc comment: its labels as `{a, b}`, and a label's values as `label ∈ x, y`.
DOC_LABELS = re.compile(r"`\{([a-z_, ]+)\}`")
DOC_VALUES = re.compile(r"([a-z_]+) ∈ ([a-z_]+(?:, [a-z_]+)*)")


def exported_metrics() -> dict:
    """Metric name → (its labels, {label: its values} where the doc lists them), from the doc
    comments of the workers' `pub const NAME: &str = "…";` metric names."""
    metrics = {}
    for path in METRIC_SOURCES:
        doc = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if line.startswith("///"):
                doc.append(line[3:].strip())
                continue
            found = re.match(r'pub const [A-Z_]+: &str = "((?:cdc|scheduler)_[a-z_]+)";', line)
            if found:
                text = " ".join(doc)
                labels = DOC_LABELS.search(text)
                metrics[found.group(1)] = (
                    {label.strip() for label in labels.group(1).split(",")} if labels else set(),
                    {label: set(values.split(", ")) for label, values in DOC_VALUES.findall(text)},
                )
            doc = []
    return metrics


def selectors(expr: str) -> tuple:
    """The metric names of an expression's selectors, its label matchers (name, label, value),
    and the labels it aggregates by; raises ValueError when it is not PromQL."""
    names, matchers, grouping = set(), [], set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
            matchers.extend((node.name, m.name, m.value) for m in node.matchers.matchers)
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            grouping.update(node.modifier.labels)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names, matchers, grouping


def value_at(values: dict, path: tuple):
    for key in path:
        values = (values or {}).get(key)
    return values


def check_prometheus_rule(values: dict, rule_objects: list, scheduler_enabled: bool, fail) -> None:
    rule_values = (values.get("metrics") or {}).get("prometheusRule") or {}
    if not rule_values.get("enabled"):
        if rule_objects:
            fail("a PrometheusRule is rendered although metrics.prometheusRule is off")
        return
    if len(rule_objects) != 1:
        fail(f"metrics.prometheusRule.enabled: expected one PrometheusRule, got {len(rule_objects)}")
    known = exported_metrics()
    for obj in rule_objects:
        where = f"PrometheusRule {obj['metadata']['name']}"
        labels = obj["metadata"].get("labels", {})
        for k, v in (rule_values.get("labels") or {}).items():
            if labels.get(k) != str(v):
                fail(f"{where}: lacks the label {k}={v} (the Prometheus ruleSelector's)")
        rules = {r.get("alert"): r for g in obj["spec"].get("groups", []) for r in g.get("rules", [])}
        wanted = dict(ALERTS)
        if scheduler_enabled:
            wanted[SCHEDULER_ALERT] = (SCHEDULER_METRICS, {("schedulerPeriods",): "> {} * "})
        if set(rules) != set(wanted):
            fail(f"{where}: alerts {sorted(rules)}, expected {sorted(wanted)}")
        for alert, rule in rules.items():
            expr = rule.get("expr", "")
            try:
                used, matchers, grouping = selectors(expr)
            except ValueError as e:
                fail(f"{where}: {alert}: not valid PromQL ({e}): {expr}")
                continue
            unknown = {HISTOGRAM_SUFFIX.sub("", m) for m in used} - known.keys()
            if unknown:
                fail(f"{where}: {alert} uses metrics no worker exports: {sorted(unknown)}")
                continue
            labels = SCRAPE_LABELS.union(*(known[HISTOGRAM_SUFFIX.sub("", m)][0] for m in used))
            if grouping - labels:
                fail(f"{where}: {alert} aggregates by labels its metrics lack: {sorted(grouping - labels)}")
            for metric, label, value in matchers:
                own_labels, values = known[HISTOGRAM_SUFFIX.sub("", metric)]
                if label not in own_labels | SCRAPE_LABELS:
                    fail(f"{where}: {alert}: {metric} has no label {label}")
                elif label in values and value not in values[label]:
                    fail(f"{where}: {alert}: {metric}{{{label}={value!r}}}: the worker exports {sorted(values[label])}")
            for duration in [rule.get("for")] if rule.get("for") else []:
                try:
                    promql_parser.parse_duration(duration)
                except ValueError as e:
                    fail(f"{where}: {alert}: `for: {duration}` is not a duration ({e})")
            if (rule.get("labels") or {}).get("severity") != rule_values.get("severity"):
                fail(f"{where}: {alert} severity is not metrics.prometheusRule.severity")
            if not (rule.get("annotations") or {}).get("summary"):
                fail(f"{where}: {alert} has no summary")
            if alert not in wanted:
                continue
            metrics, follows = wanted[alert]
            if used != metrics:
                fail(f"{where}: {alert} uses {sorted(used)}, expected {sorted(metrics)}")
            if alert in DLQ_GAUGE_ALERTS and not re.search(r"max by \([^)]*\bfamily\b[^)]*\bpartition\b[^)]*\)", expr):
                fail(f"{where}: {alert} is not the max by family and partition (every replica exports it): {expr}")
            for path, how in follows.items():
                value = value_at(rule_values, path)
                name = ".".join(path)
                if how == "for" and rule.get("for") != value:
                    fail(f"{where}: {alert} `for` is {rule.get('for')}, not {name} ({value})")
                elif how == "window" and f"[{value}" not in expr:
                    fail(f"{where}: {alert} has no range of {name} ({value}): {expr}")
                elif how not in ("for", "window") and how.format(value) not in expr:
                    fail(f"{where}: {alert} does not compare with {name} ({value}): {expr}")
