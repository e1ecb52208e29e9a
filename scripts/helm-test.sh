#!/usr/bin/env bash
# Tests the Helm chart helm/bangumi-cdc without a cluster:
#   1. tools (scripts/install-helm.sh; a no-op once installed), and
#      helm/bangumi-cdc/files/families.json is up to date with topics/families/*.toml;
#   2. the chart's README documents every value of values.yaml;
#   3. for the default values and every helm/values/*.yaml: `helm lint --strict`, `helm template`,
#      `kubernetes-validate --strict` against Kubernetes $KUBE_VERSION, the custom resources
#      (KEDA, Prometheus Operator) against helm/crd-schemas/ (scripts/crd_validate.py),
#      scripts/helm_assert.py;
#   4. values the chart must refuse (replicas above the partitions, local or production, secrets
#      in values, a memory limit below the prefetch budget, a CPU-only HPA, replay filters the
#      runtime never writes, …) fail rendering with the expected message.
#      helm/values/production-partitions.yaml renders (step 3) the accepted side: 4 replicas of a
#      42-partition family, KEDA up to 42, a larger prefetch budget;
#   5. the one-off Jobs render alone (`--show-only`), as the chart README starts them.
# Exits non-zero on any failure; the last line sums it up ("helm: N renders, F failed").
#
# Usage: scripts/helm-test.sh    (KEEP=1 keeps the rendered manifests and prints where)
source "$(dirname "$0")/lib.sh"

KUBE_VERSION=${KUBE_VERSION:-1.33.0}
CHART=$REPO_ROOT/helm/bangumi-cdc
VALUES_DIR=$REPO_ROOT/helm/values
HELM=$BIN_DIR/helm
VALIDATE=$BIN_DIR/kubernetes-validate
PY=$STATE_DIR/helm-venv/bin/python   # has PyYAML (a kubernetes-validate dependency) and tomllib

bash "$REPO_ROOT/scripts/install-helm.sh"

OUT=$(mktemp -d)
if [[ -z ${KEEP:-} ]]; then trap 'rm -rf "$OUT"' EXIT; fi

renders=0
failed=0          # failed renders (lint, template, validate, assertions)
other_failed=0    # failed checks that are not renders (generated data, README, refusals)
problems=()

# note_failure NAME MESSAGE: record a failed check and show its log.
note_failure() {
    if [[ ${RENDERING:-} ]]; then failed=$((failed + 1)); else other_failed=$((other_failed + 1)); fi
    problems+=("$1: $2")
    printf '\033[31mFAIL\033[0m %s: %s\n' "$1" "$2" >&2
    [[ -s $OUT/$1.log ]] && sed 's/^/    /' "$OUT/$1.log" >&2
    return 0
}

# 1. Generated families data.
if ! python3 "$REPO_ROOT/scripts/helm-families.py" --check >"$OUT/families.log" 2>&1; then
    note_failure families "files/families.json is stale vs topics/families/ (run scripts/helm-families.py)"
fi

# 2. The chart's README documents every value of values.yaml.
if ! "$PY" - "$CHART" >"$OUT/readme.log" 2>&1 <<'PYEOF'
import pathlib, sys, yaml
chart = pathlib.Path(sys.argv[1])
values = yaml.safe_load((chart / "values.yaml").read_text())
readme = (chart / "README.md").read_text()
# Keys whose content is free-form (Kubernetes objects, label maps): documented as a whole.
opaque = {"resources", "podSecurityContext", "securityContext", "strategy", "behavior",
          "liveness", "readiness", "startup", "families", "labels", "volume"}
def walk(d, prefix=""):
    for key, value in d.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and key not in opaque:
            yield from walk(value, path)
        else:
            yield path
missing = [p for p in walk(values) if f"| `{p}` |" not in readme]
if missing:
    sys.exit("helm/bangumi-cdc/README.md does not document: " + ", ".join(missing))
PYEOF
then
    note_failure readme "values table out of date"
fi

# 3. Renders: default values, then each values file.
cases=(default)
for file in "$VALUES_DIR"/*.yaml; do cases+=("$file"); done

RENDERING=1
for case in "${cases[@]}"; do
    renders=$((renders + 1))
    if [[ $case == default ]]; then
        name=default; args=()
    else
        name=$(basename "$case" .yaml); args=(-f "$case")
    fi
    log=$OUT/$name.log
    : >"$log"
    if ! "$HELM" lint --strict "$CHART" "${args[@]}" >>"$log" 2>&1; then
        note_failure "$name" "helm lint --strict"; continue
    fi
    if ! "$HELM" template cdc "$CHART" --namespace bangumi "${args[@]}" >"$OUT/$name.yaml" 2>>"$log"; then
        note_failure "$name" "helm template"; continue
    fi
    # kubernetes-validate has no schema for the custom resources (KEDA, Prometheus Operator): it
    # warns and passes them, and scripts/crd_validate.py checks them against helm/crd-schemas/.
    # Any other warning fails.
    if ! "$VALIDATE" --strict --quiet -k "$KUBE_VERSION" "$OUT/$name.yaml" >"$OUT/$name.validate" 2>&1; then
        cat "$OUT/$name.validate" >>"$log"
        note_failure "$name" "kubernetes-validate --strict -k $KUBE_VERSION"; continue
    fi
    if grep -v "Couldn't find schema for kind \(ScaledObject\|TriggerAuthentication\|ServiceMonitor\|PrometheusRule\) " \
        "$OUT/$name.validate" | grep -q .; then
        cat "$OUT/$name.validate" >>"$log"
        note_failure "$name" "kubernetes-validate reported problems"; continue
    fi
    if ! "$PY" "$REPO_ROOT/scripts/crd_validate.py" "$OUT/$name.yaml" >>"$log" 2>&1; then
        note_failure "$name" "custom resources against helm/crd-schemas/"; continue
    fi
    if ! "$PY" "$REPO_ROOT/scripts/helm_assert.py" "$OUT/$name.yaml" "${args[@]:1}" >>"$log" 2>&1; then
        note_failure "$name" "assertions on the rendered manifests"; continue
    fi
    printf 'ok   %-22s %s objects\n' "$name" "$(grep -c '^kind:' "$OUT/$name.yaml")"
done

RENDERING=

# 4. Values the chart must refuse, with the message an operator should see. Family names and
#    partition counts are taken from the generated data, so these follow topics/.
#    parts_b: partitions of each topic of fam_b (and of its DLQ); group_b: of its group, all topics.
read -r fam_a fam_b parts_b group_b < <(python3 -c '
import json, sys
f = json.load(open(sys.argv[1]))["families"]
names = sorted(f)
b = names[-1]
print(names[0], b, f[b]["partitions"], f[b]["partitions"] * len(f[b]["topics"] + f[b]["service_topics"]))' "$CHART/files/families.json")
refusals=(
    "replicas-over-partitions|families.$fam_b.replicas=$((group_b + 1)) exceeds the family's $group_b partitions|families.$fam_b.replicas=$((group_b + 1))"
    "autoscaling-over-partitions|autoscaling.maxReplicas=$((group_b + 1)) exceeds the family's $group_b partitions|families.$fam_b.autoscaling.mode=keda,families.$fam_b.autoscaling.maxReplicas=$((group_b + 1))"
    "replicas-over-production-partitions|families.$fam_b.replicas=43 exceeds the family's 42 partitions (families.$fam_b.partitions)|families.$fam_b.partitions=42,families.$fam_b.replicas=43"
    "autoscaling-over-production-partitions|autoscaling.maxReplicas=43 exceeds the family's 42 partitions|families.$fam_b.partitions=42,families.$fam_b.autoscaling.mode=keda,families.$fam_b.autoscaling.maxReplicas=43"
    "partitions-zero|at '/families/$fam_b/partitions': minimum|families.$fam_b.partitions=0"
    "keda-fallback-over-max|fallback.replicas=3 exceeds maxReplicas=2|families.$fam_b.autoscaling.mode=keda,families.$fam_b.autoscaling.maxReplicas=2,families.$fam_b.autoscaling.keda.fallback.replicas=3"
    "hpa-min-zero|minReplicas must be >= 1|autoscaling.mode=hpa,autoscaling.minReplicas=0"
    "grace-not-above-drain|must exceed drainTimeoutSeconds|terminationGracePeriodSeconds=10"
    "unknown-family|no such family in topics/families/|families.nope.enabled=true"
    "shared-group|would share the consumer group|families.$fam_b.groupId=shared,families.$fam_a.groupId=shared"
    "redis-password-in-values|redis.uri holds a password|redis.uri=redis://:hunter2@redis:6379/0"
    "state-redis-password-in-values|redis.state.uri holds a password|redis.state.uri=redis://:hunter2@state:6379/0"
    "secret-in-kafka-config|looks secret|kafka.config.sasl\\.password=hunter2"
    "secret-in-family-env|looks secret|families.$fam_b.env.API_TOKEN=x"
    "secret-in-scheduler-env|scheduler.env.MYSQL_PASS looks secret|scheduler.env.MYSQL_PASS=x"
    "sasl-without-secret|kafka.sasl.existingSecret is empty|kafka.sasl.mechanism=PLAIN"
    "replay-without-family|needs dlqReplay.family|dlqReplay.enabled=true"
    "replay-bad-partition|is not a partition of $fam_b|dlqReplay.enabled=true,dlqReplay.family=$fam_b,dlqReplay.partition=$parts_b"
    "replay-without-reason|needs dlqReplay.reason|dlqReplay.enabled=true,dlqReplay.family=$fam_b,dlqReplay.dryRun=false"
    "handover-without-family|needs handOver.family|handOver.enabled=true,handOver.legacyGroup=server-private"
    "handover-without-legacy-group|needs handOver.legacyGroup|handOver.enabled=true,handOver.family=$fam_b"
    "handover-without-reason|needs handOver.reason|handOver.enabled=true,handOver.family=$fam_b,handOver.legacyGroup=server-private,handOver.dryRun=false"
    "handover-bad-command|at '/handOver/command'|handOver.enabled=true,handOver.command=rewind"
    "memory-limit-below-prefetch|families.$fam_b.resources.limits.memory=100Mi is below families.$fam_b.prefetchBudgetMiB + memoryOverheadMiB = 160Mi|families.$fam_b.resources.limits.memory=100Mi"
    "memory-limit-below-bigger-prefetch|families.$fam_b.resources.limits.memory=200Mi is below families.$fam_b.prefetchBudgetMiB + memoryOverheadMiB = 256Mi|families.$fam_b.prefetchBudgetMiB=128,families.$fam_b.resources.limits.memory=200Mi"
    "memory-limit-not-quantity|is not a memory quantity|familyDefaults.resources.limits.memory=lots"
    "hpa-cpu-only|has only CPU/memory metrics|autoscaling.mode=hpa,autoscaling.hpa.metrics[0].type=Resource,autoscaling.hpa.metrics[0].resource.name=cpu"
    "replay-stage-as-error-class|dlqReplay.errorClass=\"decode\" is not an error class of a dead letter|dlqReplay.enabled=true,dlqReplay.family=$fam_b,dlqReplay.errorClass=decode"
    "replay-unknown-stage|dlqReplay.stage=\"commit\" is not a stage a record is dead-lettered at|dlqReplay.enabled=true,dlqReplay.family=$fam_b,dlqReplay.stage=commit"
    "audit-path-relative|at '/dlqAudit/mountPath'|dlqAudit.mountPath=audit"
    "reindex-bad-rate|at '/searchReindex/rate': minimum|searchReindex.enabled=true,searchReindex.rate=0"
    "reindex-bad-index|at '/searchReindex/index'|searchReindex.enabled=true,searchReindex.index=episodes"
)
refused=0
for entry in "${refusals[@]}"; do
    IFS='|' read -r name expect setting <<<"$entry"
    log=$OUT/refuse-$name.log
    if "$HELM" template cdc "$CHART" --set "$setting" >/dev/null 2>"$log"; then
        note_failure "refuse-$name" "rendered although it must fail ($setting)"
    elif ! grep -qF "$expect" "$log"; then
        note_failure "refuse-$name" "failed without the expected message \"$expect\""
    else
        refused=$((refused + 1))
    fi
done
echo "ok   $refused/${#refusals[@]} invalid value sets refused with a clear message"

# 5. The one-off Jobs as the chart README starts them (`helm template --show-only … | kubectl
#    create -f -`): exactly one Job, which kubectl can create outside the release.
one_offs=(
    "templates/dlq-replay-job.yaml|dlqReplay.enabled=true,dlqReplay.family=$fam_b,dlqReplay.errorClass=permanent,dlqReplay.stage=decode"
    "templates/handover-job.yaml|handOver.enabled=true,handOver.family=$fam_b,handOver.legacyGroup=server-private"
)
for entry in "${one_offs[@]}"; do
    IFS='|' read -r template setting <<<"$entry"
    name=one-off-$(basename "$template" .yaml)
    if ! "$HELM" template cdc "$CHART" -n bangumi --show-only "$template" --set "$setting" >"$OUT/$name.yaml" 2>"$OUT/$name.log"; then
        note_failure "$name" "helm template --show-only $template"
    elif [[ $(grep -c '^kind:' "$OUT/$name.yaml") != 1 ]] || ! grep -q '^kind: Job$' "$OUT/$name.yaml"; then
        note_failure "$name" "--show-only $template does not render exactly one Job"
    fi
done
echo "ok   ${#one_offs[@]} one-off Jobs render alone for kubectl create"

[[ -n ${KEEP:-} ]] && echo "rendered manifests kept in $OUT"
if ((failed + other_failed > 0)); then
    printf '  - %s\n' "${problems[@]}" >&2
fi
if ((other_failed > 0)); then
    echo "helm: $renders renders, $failed failed; $other_failed other checks failed"
else
    echo "helm: $renders renders, $failed failed"
fi
((failed + other_failed == 0))
