#!/usr/bin/env python3
"""Assertions on one rendering of helm/bangumi-cdc (the output of `helm template`).

Usage: helm_assert.py RENDERED.yaml [VALUES.yaml ...]

The expectations are computed independently of the chart's templates: families, topics, groups
and partitions from topics/families/*.toml (tomllib), which families are enabled from the chart's
values.yaml merged with the given values files (Helm's coalescing: maps merge, null deletes).
Prints nothing and exits 0 when every check passes; otherwise prints each failure and exits 1.
Needs PyYAML (present in the kubernetes-validate venv).
"""

import json
import pathlib
import re
import sys
import tomllib

import yaml

from helm_assert_alerts import check_prometheus_rule, exported_metrics
from helm_assert_placement import SCHEDULER_STORES, check_network_policies, check_topology_spread

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "bangumi-cdc"

# What the dashboard must show: throughput, lag, event age, retries, DLQ.
DASHBOARD_MUST = {
    "throughput": "cdc_messages_total",
    "lag": "cdc_consumer_lag",
    "event age": "cdc_event_age_seconds",
    "retries": "cdc_retries_total",
    "DLQ": 'outcome="dead_lettered"',
}
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|_PASS$|CREDENTIAL)", re.I)
URI_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]+@", re.I)
SECRET_VARS = {"KAFKA_SASL_PASSWORD", "MYSQL_PASS", "MEILISEARCH_KEY", "S3_ACCESS_KEY", "S3_SECRET_KEY"}

failures: list[str] = []


def fail(message: str) -> None:
    failures.append(message)


def merge(base, override):
    """Helm's value coalescing: maps merge recursively, null deletes, anything else replaces."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def duration_seconds(text: str) -> float:
    total, rest = 0.0, text.strip()
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)", rest):
        total += float(number) * units[unit]
    if not re.fullmatch(r"(\d+(?:\.\d+)?\s*(ms|s|m|h)\s*)+", rest):
        raise ValueError(f"cannot parse duration {text!r}")
    return total


def memory_mib(quantity) -> float:
    """A Kubernetes memory quantity (`160Mi`, `1Gi`, `200M`, bytes) in MiB."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(quantity))
    if not found:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    scale = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    return float(found.group(1)) * scale[found.group(2)] / 2**20


def dead_letter_kinds() -> tuple[set, set]:
    """The error classes and stages the runtime names (workers/runtime/src/error.rs `as_str`):
    what a dead letter's headers can say, and so what `dlq replay` can filter on."""
    text = (ROOT / "workers" / "runtime" / "src" / "error.rs").read_text()
    classes = set(re.findall(r'ErrorClass::\w+ => "(\w+)"', text))
    stages = set(re.findall(r'Stage::\w+ => "(\w+)"', text))
    return classes, stages


def load_families() -> dict:
    families = {}
    for path in sorted((ROOT / "topics" / "families").glob("*.toml")):
        with path.open("rb") as f:
            data = tomllib.load(f)
        families[data["family"]] = data
    return families


def main() -> int:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    rendered = pathlib.Path(sys.argv[1])
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for extra in sys.argv[2:]:
        values = merge(values, yaml.safe_load(pathlib.Path(extra).read_text()) or {})

    families = load_families()
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    by_kind: dict[str, list] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)

    def named(kind: str) -> dict:
        return {d["metadata"]["name"]: d for d in by_kind.get(kind, [])}

    config_maps = named("ConfigMap")
    suffix = values.get("kafka", {}).get("groupIdSuffix") or ""
    prefix = values.get("kafka", {}).get("topicPrefix") or ""

    # Which families the values enable (familyDefaults ⊕ families.<name>).
    # Partitions of each family's group: the production count (familyDefaults ⊕ families.<name>)
    # .partitions, else topics/'s per-topic count times the family's topics.
    expected = set()
    shadowed = set()  # enabled families with shadow.enabled
    shadows: dict[str, dict] = {}
    partitions_of = {}
    max_replicas_of = {}  # an autoscaler's bound: autoscaling.maxReplicas, else the partitions
    for name in families:
        own = merge(values.get("familyDefaults") or {}, (values.get("families") or {}).get(name) or {})
        if own.get("enabled"):
            expected.add(name)
            if (own.get("shadow") or {}).get("enabled"):
                shadowed.add(name)
        topics = families[name].get("topics", []) + families[name].get("service_topics", [])
        partitions_of[name] = own.get("partitions") or families[name]["partitions"] * len(topics)
        auto = merge(values.get("autoscaling") or {}, own.get("autoscaling") or {})
        max_replicas_of[name] = auto.get("maxReplicas") or partitions_of[name]

    # --- Nothing secret in what the chart renders -------------------------------------------
    if "Secret" in by_kind:
        fail("the chart renders a Secret: credentials must come from existingSecret references only")
    for cm_name, cm in config_maps.items():
        if "STATE_REDIS_URI" in (cm.get("data") or {}):
            fail(f"ConfigMap {cm_name}: STATE_REDIS_URI would reach every family; it is the timeline's")
        for key, value in (cm.get("data") or {}).items():
            if SECRET_NAME.search(key):
                fail(f"ConfigMap {cm_name}: key {key} looks secret")
            if isinstance(value, str) and URI_WITH_PASSWORD.search(value):
                fail(f"ConfigMap {cm_name}: {key} holds a URI with a password")

    # --- Families data: the ConfigMap copy equals topics/ -------------------------------------
    fam_cm = next((cm for n, cm in config_maps.items() if n.endswith("-families")), None)
    if fam_cm is None:
        fail("no <fullname>-families ConfigMap")
    else:
        generated = json.loads(fam_cm["data"]["families.json"])["families"]
        if set(generated) != set(families):
            fail(f"families ConfigMap has {sorted(generated)}, topics/ has {sorted(families)}")
        for name, toml in families.items():
            got = generated.get(name, {})
            for key in ("group", "dlq", "partitions", "topics"):
                if got.get(key) != toml[key]:
                    fail(f"families ConfigMap: {name}.{key} = {got.get(key)!r}, topics/ says {toml[key]!r}")
            if got.get("service_topics", []) != toml.get("service_topics", []):
                fail(f"families ConfigMap: {name}.service_topics differs from topics/")

    def check_pod(where: str, pod: dict, c: dict, settings: dict) -> str | None:
        """Secrets by reference only, probes, metrics port and security of a worker's pod; its
        memory limit."""
        for e in c.get("env") or []:
            name = e["name"]
            if "value" in e and (name in SECRET_VARS or SECRET_NAME.search(name)):
                fail(f"{where}: env {name} has a literal value; secrets come from secretKeyRef")
            if "value" in e and isinstance(e["value"], str) and URI_WITH_PASSWORD.search(e["value"]):
                fail(f"{where}: env {name} holds a URI with a password")
        # probes on /healthz and /readyz, on the metrics port
        port = next((p for p in c.get("ports", []) if p.get("name") == "metrics"), None)
        if port is None:
            fail(f"{where}: no container port named metrics")
        http_addr = settings.get("HTTP_ADDR", "0.0.0.0:9464")
        if port and not http_addr.endswith(f":{port['containerPort']}"):
            fail(f"{where}: HTTP_ADDR {http_addr} does not match the metrics port {port['containerPort']}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            get = (c.get(probe) or {}).get("httpGet") or {}
            if get.get("path") != path or get.get("port") not in ("metrics", port and port["containerPort"]):
                fail(f"{where}: {probe} is not an httpGet of {path} on the metrics port")

        # security
        psc = pod.get("securityContext") or {}
        csc = c.get("securityContext") or {}
        if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
            fail(f"{where}: runAsNonRoot is not set")
        if 0 in (psc.get("runAsUser"), csc.get("runAsUser")):
            fail(f"{where}: runs as uid 0")
        if csc.get("readOnlyRootFilesystem") is not True:
            fail(f"{where}: readOnlyRootFilesystem is not true")
        if csc.get("allowPrivilegeEscalation") is not False:
            fail(f"{where}: allowPrivilegeEscalation is not false")
        if csc.get("privileged"):
            fail(f"{where}: privileged")
        if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
            fail(f"{where}: capabilities do not drop ALL")
        if (csc.get("capabilities") or {}).get("add"):
            fail(f"{where}: adds capabilities")
        if pod.get("automountServiceAccountToken") is not False:
            fail(f"{where}: automountServiceAccountToken is not false")
        limit = c.get("resources", {}).get("limits", {}).get("memory")
        if not limit:
            fail(f"{where}: no memory limit")

        return limit

    # --- One Deployment per enabled family --------------------------------------------------
    deployments = by_kind.get("Deployment", [])
    seen: dict[str, dict] = {}
    for dep in deployments:
        if dep["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "scheduler":
            continue  # checked below
        fam = dep["metadata"].get("labels", {}).get("bangumi.tv/cdc-family")
        if fam is None:
            fail(f"Deployment {dep['metadata']['name']} has no bangumi.tv/cdc-family label")
            continue
        if fam.endswith("-shadow") and fam.removesuffix("-shadow") in families:
            shadows[fam.removesuffix("-shadow")] = dep
            continue
        if fam in seen:
            fail(f"two Deployments for family {fam}")
        seen[fam] = dep
    if set(seen) != expected:
        fail(f"Deployments for {sorted(seen)}, expected one per enabled family {sorted(expected)}")
    if set(shadows) != shadowed:
        fail(f"shadow Deployments for {sorted(shadows)}, expected {sorted(shadowed)}")
    # A shadow: one replica of the family's binary with RUN_MODE=shadow, in the family's group
    # (the worker adds `.shadow`), never scaled by an autoscaler.
    for fam, dep in shadows.items():
        where = f"Deployment {dep['metadata']['name']} (shadow of {fam})"
        c = dep["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        if c.get("command") != [fam] or dep["spec"].get("replicas") != 1:
            fail(f"{where}: expected 1 replica of [{fam!r}], got {dep['spec'].get('replicas')} of {c.get('command')}")
        if env.get("RUN_MODE") != "shadow":
            fail(f"{where}: RUN_MODE {env.get('RUN_MODE')!r}, expected 'shadow'")
        if env.get("KAFKA_GROUP_ID") != families[fam]["group"] + suffix:
            fail(f"{where}: KAFKA_GROUP_ID {env.get('KAFKA_GROUP_ID')!r} is not the family's group")
        if dep["metadata"]["annotations"].get("bangumi.tv/cdc-consumer-group") != families[fam]["group"] + suffix + ".shadow":
            fail(f"{where}: consumer-group annotation does not end with .shadow")

    groups: dict[str, str] = {}
    scaled_targets: dict[str, str] = {}  # Deployment name → autoscaler kind
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for obj in by_kind.get(kind, []):
            target = obj["spec"]["scaleTargetRef"]["name"]
            if target in scaled_targets:
                fail(f"Deployment {target} has two autoscalers")
            scaled_targets[target] = kind
    dep_names = {d["metadata"]["name"]: fam for fam, d in seen.items()}

    for fam, dep in seen.items():
        where = f"Deployment {dep['metadata']['name']} ({fam})"
        toml = families[fam]
        partitions = partitions_of[fam]
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        meta_labels = spec["template"]["metadata"].get("labels", {})
        for k, v in spec["selector"]["matchLabels"].items():
            if meta_labels.get(k) != v:
                fail(f"{where}: selector label {k}={v} not on the pod template")

        # replicas ≤ partitions; no replicas field when an autoscaler owns the count
        if "replicas" in spec:
            if spec["replicas"] > partitions:
                fail(f"{where}: replicas {spec['replicas']} > {partitions} partitions")
            if dep["metadata"]["name"] in scaled_targets:
                fail(f"{where}: sets replicas although {scaled_targets[dep['metadata']['name']]} scales it")

        containers = pod["containers"]
        if len(containers) != 1:
            fail(f"{where}: expected one container, got {len(containers)}")
            continue
        c = containers[0]
        if c.get("command") != [fam]:
            fail(f"{where}: command {c.get('command')} is not the family's binary [{fam!r}]")
        if not c.get("args") or c["args"][-1] != "run":
            fail(f"{where}: args {c.get('args')} do not end with the `run` subcommand")

        # environment: the family's group, secrets by reference only
        env = {e["name"]: e for e in c.get("env", [])}
        group = env.get("KAFKA_GROUP_ID", {}).get("value")
        if group != toml["group"] + suffix:
            fail(f"{where}: KAFKA_GROUP_ID {group!r}, topics/ says {toml['group'] + suffix!r}")
        elif group in groups:
            fail(f"{where}: consumer group {group} shared with {groups[group]}")
        else:
            groups[group] = fam
        # secrets: exactly those of the stores the family uses (topics/ `stores`), when set
        store_secrets = {
            "redis": {"REDIS_URI"},
            "mysql": {"MYSQL_PASS"},
            "meilisearch": {"MEILISEARCH_KEY"},
            "s3": {"S3_ACCESS_KEY", "S3_SECRET_KEY"},
        }
        for store, names in store_secrets.items():
            configured = bool((values.get(store) or {}).get("existingSecret"))
            for name in names:
                got = "secretKeyRef" in (env.get(name) or {}).get("valueFrom", {})
                if got and store not in toml["stores"]:
                    fail(f"{where}: gets {name} from a Secret but the family does not use {store}")
                if configured and store in toml["stores"] and not got:
                    fail(f"{where}: {name} not from {store}.existingSecret although the family uses {store}")
        # the fan-out's state Redis: the timeline's alone, exactly as redis.state says
        state = (values.get("redis") or {}).get("state") or {}
        got_state = env.get("STATE_REDIS_URI")
        if fam != "timeline":
            if got_state is not None:
                fail(f"{where}: STATE_REDIS_URI is the timeline's setting alone")
        elif state.get("existingSecret"):
            ref = ((got_state or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref != {"name": state["existingSecret"], "key": state.get("uriKey") or "uri"}:
                fail(f"{where}: STATE_REDIS_URI {got_state!r} is not redis.state.existingSecret's key")
        elif state.get("uri"):
            if (got_state or {}).get("value") != state["uri"]:
                fail(f"{where}: STATE_REDIS_URI {got_state!r} != redis.state.uri {state['uri']!r}")
        elif got_state is not None:
            fail(f"{where}: STATE_REDIS_URI set although redis.state is empty")
        settings = {}
        for src in c.get("envFrom", []):
            ref = src.get("configMapRef", {}).get("name")
            if ref:
                if ref not in config_maps:
                    fail(f"{where}: envFrom ConfigMap {ref} is not rendered")
                else:
                    settings.update(config_maps[ref].get("data") or {})
        settings.update({n: e["value"] for n, e in env.items() if "value" in e})

        # topics: the annotation lists exactly the family's topics from topics/
        topics = dep["metadata"].get("annotations", {}).get("bangumi.tv/cdc-topics", "")
        want = toml["topics"] + toml.get("service_topics", [])
        if topics.split(",") != want:
            fail(f"{where}: topics annotation {topics!r} != topics/ {want}")
        if dep["metadata"]["annotations"].get("bangumi.tv/cdc-partitions") != str(partitions):
            fail(f"{where}: partitions annotation differs from the family's {partitions}")

        limit = check_pod(where, pod, c, settings)

        # memory: the limit holds the whole prefetch budget (every partition's queue full, a
        # first deploy's catch-up) plus the family's overhead; the request is the limit unless set
        own = merge(values.get("familyDefaults") or {}, (values.get("families") or {}).get(fam) or {})
        budget = settings.get("PREFETCH_BUDGET", "")
        floor = own["prefetchBudgetMiB"] + own["memoryOverheadMiB"]
        if budget != f"{own['prefetchBudgetMiB']}MiB":
            fail(f"{where}: PREFETCH_BUDGET {budget!r} is not prefetchBudgetMiB ({own['prefetchBudgetMiB']}) in MiB")
        if limit and memory_mib(limit) < floor:
            fail(f"{where}: memory limit {limit} is below prefetchBudgetMiB + memoryOverheadMiB = {floor} MiB")
        own_limit = ((own.get("resources") or {}).get("limits") or {}).get("memory")
        if limit != (own_limit or f"{floor}Mi"):
            fail(f"{where}: memory limit {limit}, expected {own_limit or f'{floor}Mi'}")
        request = c.get("resources", {}).get("requests", {}).get("memory")
        if request != (((own.get("resources") or {}).get("requests") or {}).get("memory") or limit):
            fail(f"{where}: memory request {request} is neither resources.requests.memory nor the limit {limit}")
        per_partition = dep["metadata"]["annotations"].get("bangumi.tv/cdc-prefetch-per-partition")
        if per_partition != f"{own['prefetchBudgetMiB'] * 1024 // partitions}KiB":
            fail(f"{where}: prefetch-per-partition annotation {per_partition!r} is not the budget over {partitions} partitions")

        # graceful shutdown
        try:
            drain = duration_seconds(settings.get("DRAIN_TIMEOUT", "10s"))
        except ValueError as e:
            fail(f"{where}: DRAIN_TIMEOUT: {e}")
            drain = 10
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if not grace > drain:
            fail(f"{where}: terminationGracePeriodSeconds {grace} <= DRAIN_TIMEOUT {drain}s")

    for sa in by_kind.get("ServiceAccount", []):
        if sa.get("automountServiceAccountToken") is not False:
            fail(f"ServiceAccount {sa['metadata']['name']}: automountServiceAccountToken is not false")

    # --- Autoscalers: capped at the family's partitions -------------------------------------
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        target = hpa["spec"]["scaleTargetRef"]["name"]
        fam = dep_names.get(target)
        if fam is None:
            fail(f"HPA {hpa['metadata']['name']} targets unknown Deployment {target}")
            continue
        lo, hi, parts = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"], partitions_of[fam]
        if hi != max_replicas_of[fam]:
            fail(f"HPA {hpa['metadata']['name']}: maxReplicas {hi}, expected {max_replicas_of[fam]}")
        # a lag signal, not CPU alone: a worker waiting on a paused partition uses no CPU
        metrics = hpa["spec"].get("metrics") or []
        if all(m.get("type") in ("Resource", "ContainerResource") for m in metrics):
            fail(f"HPA {hpa['metadata']['name']}: scales on {[m.get('type') for m in metrics]} only, flat while the worker is blocked")
        lag = [m for m in metrics if m.get("type") == "External"
               and m["external"]["metric"]["name"] == "cdc_consumer_lag"
               and m["external"]["metric"].get("selector", {}).get("matchLabels", {}).get("family") == fam]
        if not lag and not any(m.get("type") in ("Pods", "Object") for m in metrics):
            fail(f"HPA {hpa['metadata']['name']}: no External cdc_consumer_lag metric of family {fam}")
        if hi > parts:
            fail(f"HPA {hpa['metadata']['name']}: maxReplicas {hi} > {parts} partitions of {fam}")
        if not 1 <= lo <= hi:
            fail(f"HPA {hpa['metadata']['name']}: minReplicas {lo} not in 1..{hi}")
    for so in by_kind.get("ScaledObject", []):
        target = so["spec"]["scaleTargetRef"]["name"]
        fam = dep_names.get(target)
        if fam is None:
            fail(f"ScaledObject {so['metadata']['name']} targets unknown Deployment {target}")
            continue
        toml = families[fam]
        lo, hi = so["spec"].get("minReplicaCount", 0), so["spec"].get("maxReplicaCount")
        if hi != max_replicas_of[fam]:
            fail(f"ScaledObject {so['metadata']['name']}: maxReplicaCount {hi}, expected {max_replicas_of[fam]}")
        if hi is None or hi > partitions_of[fam]:
            fail(f"ScaledObject {so['metadata']['name']}: maxReplicaCount {hi} > {partitions_of[fam]} partitions of {fam}")
        if hi is not None and not 1 <= lo <= hi:
            fail(f"ScaledObject {so['metadata']['name']}: minReplicaCount {lo} not in 1..{hi}")
        keda = merge(merge((values.get("autoscaling") or {}).get("keda") or {},
                           ((values.get("familyDefaults") or {}).get("autoscaling") or {}).get("keda") or {}),
                     (((values.get("families") or {}).get(fam) or {}).get("autoscaling") or {}).get("keda") or {})
        fallback = keda.get("fallback") or {}
        got = so["spec"].get("fallback")
        if (fallback.get("failureThreshold") or 0) > 0:
            want_replicas = fallback.get("replicas") or lo
            if got != {"failureThreshold": fallback["failureThreshold"], "replicas": want_replicas,
                       "behavior": fallback.get("behavior")}:
                fail(f"ScaledObject {so['metadata']['name']}: fallback {got} is not autoscaling.keda.fallback")
            elif hi is not None and not 1 <= want_replicas <= hi:
                fail(f"ScaledObject {so['metadata']['name']}: fallback replicas {want_replicas} not in 1..{hi}")
        elif got is not None:
            fail(f"ScaledObject {so['metadata']['name']}: a fallback although failureThreshold is 0")
        triggers = so["spec"].get("triggers") or []
        if not triggers:
            fail(f"ScaledObject {so['metadata']['name']}: no triggers")
        allowed = {prefix + t for t in toml["topics"] + toml.get("service_topics", [])}
        for trig in triggers:
            md = trig.get("metadata", {})
            if trig.get("type") != "kafka":
                fail(f"ScaledObject {so['metadata']['name']}: trigger type {trig.get('type')} is not kafka")
            if md.get("consumerGroup") != toml["group"] + suffix:
                fail(f"ScaledObject {so['metadata']['name']}: consumerGroup {md.get('consumerGroup')} is not {fam}'s")
            if "topic" in md and md["topic"] not in allowed:
                fail(f"ScaledObject {so['metadata']['name']}: topic {md['topic']} is not one of {fam}'s")
            if str(md.get("allowIdleConsumers", "false")).lower() != "false":
                fail(f"ScaledObject {so['metadata']['name']}: allowIdleConsumers must stay false")
            if md.get("excludePersistentLag") != str(bool(keda.get("excludePersistentLag"))).lower():
                fail(f"ScaledObject {so['metadata']['name']}: excludePersistentLag is not autoscaling.keda.excludePersistentLag")
            ref = (trig.get("authenticationRef") or {}).get("name")
            external_ref = ((values.get("autoscaling") or {}).get("keda") or {}).get("authenticationRef")
            if ref and ref not in named("TriggerAuthentication") and ref != external_ref:
                fail(f"ScaledObject {so['metadata']['name']}: authenticationRef {ref} is not rendered")

    # --- PDB and metrics Service per Deployment ---------------------------------------------
    def selects(selector: dict, dep: dict) -> bool:
        labels = dep["spec"]["template"]["metadata"].get("labels", {})
        return all(labels.get(k) == v for k, v in selector.items())

    pdb_on = (values.get("podDisruptionBudget") or {}).get("enabled")
    svc_on = ((values.get("metrics") or {}).get("service") or {}).get("enabled")
    for fam, dep in shadows.items():
        if dep["metadata"]["name"] in scaled_targets:
            fail(f"shadow of {fam}: scaled by an autoscaler")
        svcs = [s for s in by_kind.get("Service", []) if selects(s["spec"]["selector"], dep)]
        if svc_on and len(svcs) != 1:
            fail(f"shadow of {fam}: {len(svcs)} metrics Services select its pods, expected 1")
    for fam, dep in seen.items():
        pdbs = [p for p in by_kind.get("PodDisruptionBudget", []) if selects(p["spec"]["selector"]["matchLabels"], dep)]
        if pdb_on and len(pdbs) != 1:
            fail(f"family {fam}: {len(pdbs)} PodDisruptionBudgets select its pods, expected 1")
        svcs = [s for s in by_kind.get("Service", []) if selects(s["spec"]["selector"], dep)]
        if svc_on and len(svcs) != 1:
            fail(f"family {fam}: {len(svcs)} metrics Services select its pods, expected 1")
    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"]["matchLabels"]
        hit = [s for s in by_kind.get("Service", []) if all(s["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        want = len(seen) + len(shadows) + (1 if (values.get("scheduler") or {}).get("enabled") else 0)
        if len(hit) != want:
            fail(f"ServiceMonitor {sm['metadata']['name']} selects {len(hit)} Services, expected {want}")
        if not any(e.get("port") == "metrics" and e.get("path", "/metrics") == "/metrics" for e in sm["spec"]["endpoints"]):
            fail(f"ServiceMonitor {sm['metadata']['name']}: no endpoint on port metrics, /metrics")
    if ((values.get("metrics") or {}).get("serviceMonitor") or {}).get("enabled") and svc_on and not by_kind.get("ServiceMonitor"):
        fail("metrics.serviceMonitor.enabled but no ServiceMonitor rendered")

    # --- The scheduler: one Deployment (replicas as asked), the Redis and MariaDB secrets only --
    sched_values = values.get("scheduler") or {}
    sched = [d for d in deployments if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "scheduler"]
    if not sched_values.get("enabled"):
        if sched:
            fail("a scheduler Deployment is rendered although scheduler.enabled is off")
    elif len(sched) != 1:
        fail(f"scheduler.enabled: expected one scheduler Deployment, got {len(sched)}")
    for dep in sched:
        where = f"Deployment {dep['metadata']['name']} (scheduler)"
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        if dep["spec"].get("replicas") != sched_values.get("replicas"):
            fail(f"{where}: replicas {dep['spec'].get('replicas')} != scheduler.replicas")
        if c.get("command") != ["scheduler"] or c.get("args") != ["daemon"]:
            fail(f"{where}: runs {c.get('command')} {c.get('args')}, not `scheduler daemon`")
        env = {e["name"]: e for e in c.get("env") or []}
        from_secrets = {n for n, e in env.items() if "secretKeyRef" in (e.get("valueFrom") or {})}
        allowed = {"REDIS_URI", "MYSQL_PASS", "MYSQL_USER"}
        if from_secrets - allowed:
            fail(f"{where}: secrets {sorted(from_secrets - allowed)} it does not use")
        for store, name in (("redis", "REDIS_URI"), ("mysql", "MYSQL_PASS")):
            if (values.get(store) or {}).get("existingSecret") and name not in from_secrets:
                fail(f"{where}: {name} not from {store}.existingSecret")
        settings = {}
        for src in c.get("envFrom", []):
            settings.update((config_maps.get(src.get("configMapRef", {}).get("name")) or {}).get("data") or {})
        check_pod(where, pod, c, settings)
        svc_on = ((values.get("metrics") or {}).get("service") or {}).get("enabled")
        labels = dep["spec"]["template"]["metadata"].get("labels", {})
        svcs = [s for s in by_kind.get("Service", []) if all(labels.get(k) == v for k, v in s["spec"]["selector"].items())]
        if svc_on and len(svcs) != 1:
            fail(f"{where}: {len(svcs)} metrics Services select its pods, expected 1")

    # --- PrometheusRule: the alerts, only when asked for (helm_assert_alerts.py) --------------
    check_prometheus_rule(values, by_kind.get("PrometheusRule", []), bool(sched_values.get("enabled")), fail)

    # --- DLQ replay Job: only when asked for ------------------------------------------------
    replay = values.get("dlqReplay") or {}
    all_jobs = by_kind.get("Job", [])
    component = lambda job: job["metadata"].get("labels", {}).get("app.kubernetes.io/component")
    jobs = [j for j in all_jobs if component(j) == "dlq-replay"]
    others = [j["metadata"]["name"] for j in all_jobs if component(j) not in ("dlq-replay", "dlq-handover", "migrate", "search-reindex")]
    if others:
        fail(f"unexpected Jobs {others}")
    if not replay.get("enabled"):
        if jobs:
            fail(f"a Job is rendered ({jobs[0]['metadata']['name']}) although dlqReplay is off")
    else:
        if len(jobs) != 1:
            fail(f"dlqReplay.enabled: expected one Job, got {len(jobs)}")
        for job in jobs:
            pod = job["spec"]["template"]["spec"]
            c = pod["containers"][0]
            args = c.get("args", [])
            if c.get("command") != ["dlq"] or args[:3] != ["replay", "--family", replay.get("family")]:
                fail(f"Job {job['metadata']['name']}: runs {c.get('command')} {args}, expected dlq replay --family {replay.get('family')}")
            if replay.get("family") not in families:
                fail(f"Job {job['metadata']['name']}: family {replay.get('family')} is not in topics/")
            if bool(replay.get("reason")) != ("--reason" in args) or (not replay.get("dryRun") and "--reason" not in args):
                fail(f"Job {job['metadata']['name']}: --reason does not follow dlqReplay.reason (required unless dryRun)")
            audit = next((e.get("value") for e in c.get("env", []) if e.get("name") == "DLQ_AUDIT_LOG"), None)
            mounts = [m["mountPath"] for m in c.get("volumeMounts", []) if not m.get("readOnly")]
            if not audit or not any(audit.startswith(m.rstrip("/") + "/") for m in mounts):
                fail(f"Job {job['metadata']['name']}: DLQ_AUDIT_LOG {audit} is not on a writable volume (the root filesystem is read-only)")
            if "--rate" not in args:
                fail(f"Job {job['metadata']['name']}: no --rate")
            classes, stages = dead_letter_kinds()
            for flag, known in (("--error-class", classes), ("--stage", stages)):
                if flag in args and args[args.index(flag) + 1] not in known:
                    fail(f"Job {job['metadata']['name']}: {flag} {args[args.index(flag) + 1]} is not one the runtime writes ({sorted(known)})")
            if bool(replay.get("dryRun")) != ("--dry-run" in args):
                fail(f"Job {job['metadata']['name']}: --dry-run does not follow dlqReplay.dryRun")
            csc = c.get("securityContext") or {}
            if csc.get("readOnlyRootFilesystem") is not True or "ALL" not in (csc.get("capabilities") or {}).get("drop", []):
                fail(f"Job {job['metadata']['name']}: container security context is not locked down")
            if pod.get("automountServiceAccountToken") is not False or pod.get("restartPolicy") != "Never":
                fail(f"Job {job['metadata']['name']}: token mounted or restartPolicy is not Never")

    # --- the one-off Jobs: created with kubectl, left alone by GitOps; audit trail writable ---
    for job in [j for j in all_jobs if component(j) in ("dlq-replay", "dlq-handover")]:
        notes = job["metadata"].get("annotations") or {}
        for key, value in (("argocd.argoproj.io/sync-options", "Prune=false"),
                           ("argocd.argoproj.io/compare-options", "IgnoreExtraneous"),
                           ("kustomize.toolkit.fluxcd.io/prune", "disabled")):
            if notes.get(key) != value:
                fail(f"Job {job['metadata']['name']}: annotation {key}={value} missing (a GitOps sync would prune it)")
        c = job["spec"]["template"]["spec"]["containers"][0]
        audit = next((e.get("value") for e in c.get("env", []) if e.get("name") == "DLQ_AUDIT_LOG"), None)
        writable = [m["mountPath"] for m in c.get("volumeMounts", []) if not m.get("readOnly")]
        if (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True:
            fail(f"Job {job['metadata']['name']}: root filesystem is not read-only")
        if not audit or not any(audit.startswith(m.rstrip("/") + "/") for m in writable):
            fail(f"Job {job['metadata']['name']}: DLQ_AUDIT_LOG {audit} is not on a writable volume")

    # --- offset hand-over Job: only when asked for, offsets only ---------------------------
    hand = values.get("handOver") or {}
    handovers = [j for j in all_jobs if component(j) == "dlq-handover"]
    if len(handovers) != (1 if hand.get("enabled") else 0):
        fail(f"hand-over Job: expected {1 if hand.get('enabled') else 0}, got {len(handovers)}")
    for job in handovers:
        c = job["spec"]["template"]["spec"]["containers"][0]
        args = c.get("args", [])
        group_flag = "--from-group" if hand.get("command") == "cutover" else "--to-group"
        hand_args = [hand.get("command"), "--family", hand.get("family"), group_flag, hand.get("legacyGroup")]
        if c.get("command") != ["dlq"] or args[:5] != hand_args:
            fail(f"Job {job['metadata']['name']}: runs {c.get('command')} {args}, expected dlq {' '.join(map(str, hand_args))}")
        if bool(hand.get("dryRun")) != ("--dry-run" in args) or bool(hand.get("dryRun")) == ("--yes" in args):
            fail(f"Job {job['metadata']['name']}: --dry-run / --yes do not follow handOver.dryRun")
        names = {e.get("name") for e in c.get("env", [])}
        if names & {"REDIS_URI", "MYSQL_PASS", "MEILISEARCH_KEY", "S3_SECRET_KEY"}:
            fail(f"Job {job['metadata']['name']}: gets store secrets it does not need: {sorted(names)}")
        group = next((e.get("value") for e in c.get("env", []) if e.get("name") == "KAFKA_GROUP_ID"), None)
        if hand.get("family") in families and group != families[hand["family"]]["group"] + suffix:
            fail(f"Job {job['metadata']['name']}: KAFKA_GROUP_ID {group} is not the family's group")

    # --- search reindex Job: only when asked for, with only the search family's secrets -------
    reindex = values.get("searchReindex") or {}
    reindexes = [j for j in all_jobs if component(j) == "search-reindex"]
    if len(reindexes) != (1 if reindex.get("enabled") else 0):
        fail(f"search reindex Job: expected {1 if reindex.get('enabled') else 0}, got {len(reindexes)}")
    for job in reindexes:
        name = job["metadata"]["name"]
        pod = job["spec"]["template"]["spec"]
        c = pod["containers"][0]
        args = c.get("args", [])
        if c.get("command") != ["search"] or args[:3] != ["reindex", "--index", reindex.get("index")]:
            fail(f"Job {name}: runs {c.get('command')} {args}, expected search reindex --index {reindex.get('index')}")
        rate = reindex.get("rate")
        if (rate is None) == ("--rate" in args) or (rate is not None and args[args.index("--rate") + 1] != str(rate)):
            fail(f"Job {name}: --rate does not follow searchReindex.rate ({rate})")
        if args[args.index("--page-size") + 1] != str(reindex.get("pageSize")):
            fail(f"Job {name}: --page-size does not follow searchReindex.pageSize")
        if bool(reindex.get("dryRun")) != ("--dry-run" in args):
            fail(f"Job {name}: --dry-run does not follow searchReindex.dryRun")
        if not any((e.get("configMapRef") or {}).get("name", "").endswith("-settings") for e in c.get("envFrom", [])):
            fail(f"Job {name}: does not take the settings ConfigMap")
        secret_env = {e["name"] for e in c.get("env", []) if "valueFrom" in e}
        if secret_env - {"MYSQL_PASS", "MYSQL_USER", "MEILISEARCH_KEY"}:
            fail(f"Job {name}: secrets beyond the search family's: {sorted(secret_env)}")
        if job["spec"].get("backoffLimit") != reindex.get("backoffLimit"):
            fail(f"Job {name}: backoffLimit is not searchReindex.backoffLimit")
        if job["spec"].get("activeDeadlineSeconds") != reindex.get("activeDeadlineSeconds"):
            fail(f"Job {name}: activeDeadlineSeconds is not searchReindex.activeDeadlineSeconds")
        csc = c.get("securityContext") or {}
        if csc.get("readOnlyRootFilesystem") is not True or "ALL" not in (csc.get("capabilities") or {}).get("drop", []):
            fail(f"Job {name}: container security context is not locked down")
        if pod.get("automountServiceAccountToken") is not False or pod.get("restartPolicy") != "Never":
            fail(f"Job {name}: token mounted or restartPolicy is not Never")

    # --- migrate: a pre-install/pre-upgrade hook while a family with tables runs ---------------
    migrating = sorted(n for n in expected if families[n].get("migrate"))
    migrate_on = (values.get("migrate") or {}).get("enabled", True) and bool(migrating)
    migrates = [j for j in all_jobs if component(j) == "migrate"]
    if len(migrates) != (1 if migrate_on else 0):
        fail(f"migrate hook: expected {1 if migrate_on else 0} Job, got {len(migrates)}")
    mysql = values.get("mysql") or {}
    for job in migrates:
        name = job["metadata"]["name"]
        hooks = set((job["metadata"].get("annotations") or {}).get("helm.sh/hook", "").split(","))
        if not {"pre-install", "pre-upgrade"} <= hooks:
            fail(f"Job {name}: not a pre-install,pre-upgrade hook ({sorted(hooks)})")
        pod = job["spec"]["template"]["spec"]
        c = pod["containers"][0]
        if c.get("command") != migrating[:1] or c.get("args") != ["migrate"]:
            fail(f"Job {name}: runs {c.get('command')} {c.get('args')}, expected {migrating[:1]} migrate")
        if c.get("envFrom"):
            fail(f"Job {name}: envFrom refers to objects a pre-install hook runs before")
        if pod.get("serviceAccountName"):
            fail(f"Job {name}: ServiceAccount {pod['serviceAccountName']} may not exist before install")
        env = {e["name"]: e for e in c.get("env", [])}
        if (env.get("MYSQL_DB") or {}).get("value") != str(mysql.get("database")) \
                or (env.get("MYSQL_HOST") or {}).get("value") != str(mysql.get("host")):
            fail(f"Job {name}: MYSQL_HOST/MYSQL_DB are not mysql.host/mysql.database")
        if mysql.get("existingSecret") and "secretKeyRef" not in (env.get("MYSQL_PASS") or {}).get("valueFrom", {}):
            fail(f"Job {name}: MYSQL_PASS not from mysql.existingSecret")
        csc = c.get("securityContext") or {}
        if csc.get("readOnlyRootFilesystem") is not True or "ALL" not in (csc.get("capabilities") or {}).get("drop", []):
            fail(f"Job {name}: container security context is not locked down")
        if pod.get("automountServiceAccountToken") is not False or pod.get("restartPolicy") != "Never":
            fail(f"Job {name}: token mounted or restartPolicy is not Never")

    # --- Grafana dashboard ------------------------------------------------------------------
    dash_on = (values.get("dashboard") or {}).get("enabled")
    dashboards = [cm for cm in config_maps.values() if any(k.endswith(".json") for k in (cm.get("data") or {})) and not cm["metadata"]["name"].endswith("-families")]
    if dash_on and len(dashboards) != 1:
        fail(f"dashboard.enabled: expected one dashboard ConfigMap, got {len(dashboards)}")
    for cm in dashboards:
        labels = cm["metadata"].get("labels", {})
        for k, v in ((values.get("dashboard") or {}).get("labels") or {}).items():
            if labels.get(k) != str(v):
                fail(f"dashboard ConfigMap lacks the sidecar label {k}={v}")
        for key, text in cm["data"].items():
            try:
                dash = json.loads(text)
            except json.JSONDecodeError as e:
                fail(f"dashboard {key} is not JSON: {e}")
                continue
            exprs = [t.get("expr", "") for p in dash.get("panels", []) for t in p.get("targets", [])]
            used = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"\bcdc_[a-z_]+", e)}
            if used - exported_metrics().keys():
                fail(f"dashboard uses metrics no worker exports: {sorted(used - exported_metrics().keys())}")
            joined = "\n".join(exprs)
            for what, needle in DASHBOARD_MUST.items():
                if needle not in joined:
                    fail(f"dashboard shows no {what} ({needle})")
            if not all("family" in e for e in exprs):
                fail("dashboard has a query not broken down/filtered by family")

    # --- Placement and network: spread, NetworkPolicies (helm_assert_placement.py) ------------
    by_name = {d["metadata"]["name"]: d for d in deployments}
    own_spread = {}
    stores_of = {}
    for fam, dep in [*seen.items(), *shadows.items()]:
        own = merge(values.get("familyDefaults") or {}, (values.get("families") or {}).get(fam) or {})
        own_spread[dep["metadata"]["name"]] = own.get("topologySpreadConstraints") or []
        stores_of[dep["metadata"]["name"]] = (families[fam]["stores"], True)
    for dep in sched:
        stores_of[dep["metadata"]["name"]] = (SCHEDULER_STORES, False)
    check_topology_spread(values, by_name, own_spread, fail)
    check_network_policies(values, by_kind.get("NetworkPolicy", []), by_name, stores_of, fail)

    for message in failures:
        print(f"  assert: {message}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
