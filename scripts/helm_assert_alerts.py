"""Checks of helm_assert.py on the PrometheusRule (metrics.prometheusRule): every expression
parses as PromQL (promql-parser from PyPI, the offline checker: the parser of GreptimeDB's Rust
crate, which also knows every PromQL function), uses only metrics the workers export (read from
their source: `pub const … = "cdc_…"` / `"scheduler_…"`), and takes its thresholds and durations
from the values.

# Layout
- `exported_metrics`: the metric names in the workers' source.
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


def exported_metrics() -> set:
    names = set()
    for path in METRIC_SOURCES:
        names.update(re.findall(r'pub const [A-Z_]+: &str = "((?:cdc|scheduler)_[a-z_]+)";', path.read_text()))
    return names


def selectors(expr: str) -> set:
    """The metric names of an expression's selectors; raises ValueError when it is not PromQL."""
    names = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


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
                used = selectors(expr)
            except ValueError as e:
                fail(f"{where}: {alert}: not valid PromQL ({e}): {expr}")
                continue
            if {HISTOGRAM_SUFFIX.sub("", m) for m in used} - known:
                fail(f"{where}: {alert} uses metrics no worker exports: {sorted(used - known)}")
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
