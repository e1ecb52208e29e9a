"""Checks of helm_assert.py on where the pods run and whom they reach: topology spread
constraints and NetworkPolicies. Expectations come from the values and topics/, not the templates.

# Layout
- `check_topology_spread`: every Deployment spreads its own pods (or takes a family's override).
- `check_network_policies`: with networkPolicy.enabled, one policy per Deployment, egress to DNS
  and only the ports of what its pods use; none otherwise.
"""

import re

# The ports networkPolicy.ports holds, by store (MariaDB's is mysql.port, Kafka's in kafka.brokers).
STORE_PORT_VALUES = {"redis": "redis", "meilisearch": "meilisearch", "s3": "s3"}
SCHEDULER_STORES = ["redis", "mysql"]


def check_topology_spread(values: dict, deployments: dict, own: dict, fail) -> None:
    """`deployments`: name → Deployment; `own`: name → the family's topologySpreadConstraints."""
    spread = values.get("topologySpread") or {}
    keys = spread.get("topologyKeys") or []
    for name, dep in deployments.items():
        selector = dep["spec"]["selector"]["matchLabels"]
        got = dep["spec"]["template"]["spec"].get("topologySpreadConstraints") or []
        if own.get(name):
            if got != own[name]:
                fail(f"Deployment {name}: topologySpreadConstraints are not the family's own")
            continue
        if [c.get("topologyKey") for c in got] != keys:
            fail(f"Deployment {name}: spread over {[c.get('topologyKey') for c in got]}, expected {keys}")
        for c in got:
            if c.get("labelSelector", {}).get("matchLabels") != selector:
                fail(f"Deployment {name}: a spread constraint does not select the Deployment's own pods")
            if c.get("whenUnsatisfiable") != spread.get("whenUnsatisfiable") or c.get("maxSkew") != 1:
                fail(f"Deployment {name}: spread constraint {c} is not maxSkew 1, {spread.get('whenUnsatisfiable')}")
            if "pod-template-hash" not in (c.get("matchLabelKeys") or []):
                fail(f"Deployment {name}: spread counts the pods of other rollouts (no pod-template-hash key)")


def expected_ports(values: dict, stores: list, kafka: bool) -> set:
    """The TCP ports a pod using `stores` (and Kafka when `kafka`) may connect to."""
    np = values.get("networkPolicy") or {}
    ports = set()
    if kafka:
        for broker in str((values.get("kafka") or {}).get("brokers", "")).split(","):
            found = re.search(r":(\d+)\s*$", broker)
            ports.add(int(found.group(1)) if found else 9092)
        if (values.get("schemaRegistry") or {}).get("url"):
            ports.update(np["ports"]["schemaRegistry"])
    for store in stores:
        if store == "mysql":
            ports.add(int(values["mysql"]["port"]))
        else:
            ports.update(np["ports"][STORE_PORT_VALUES[store]])
    return ports


def check_network_policies(values: dict, policies: list, deployments: dict, stores_of: dict, fail) -> None:
    """`stores_of`: Deployment name → (stores, uses Kafka) of its pods."""
    np = values.get("networkPolicy") or {}
    if not np.get("enabled"):
        if policies:
            fail("NetworkPolicies are rendered although networkPolicy.enabled is off")
        return
    by_selector = {}
    for policy in policies:
        key = tuple(sorted(policy["spec"]["podSelector"]["matchLabels"].items()))
        by_selector.setdefault(key, []).append(policy)
    for name, dep in deployments.items():
        key = tuple(sorted(dep["spec"]["selector"]["matchLabels"].items()))
        mine = by_selector.pop(key, [])
        if len(mine) != 1:
            fail(f"Deployment {name}: {len(mine)} NetworkPolicies select its pods, expected 1")
            continue
        spec = mine[0]["spec"]
        where = f"NetworkPolicy {mine[0]['metadata']['name']}"
        if sorted(spec.get("policyTypes") or []) != ["Egress", "Ingress"]:
            fail(f"{where}: policyTypes {spec.get('policyTypes')} are not Ingress and Egress")
        ingress_ports = [p for rule in spec.get("ingress") or [] for p in rule.get("ports") or []]
        if ingress_ports != [{"port": "metrics", "protocol": "TCP"}]:
            fail(f"{where}: ingress {ingress_ports} is not the metrics port alone")
        rules = spec.get("egress") or []
        extra = np.get("extraEgress") or []
        if rules[len(rules) - len(extra):] != extra:
            fail(f"{where}: networkPolicy.extraEgress is not at the end of its egress rules")
        rules = rules[: len(rules) - len(extra)]
        dns = int(np.get("dnsPort", 53))
        if not rules or rules[0] != {"ports": [{"port": dns, "protocol": "UDP"}, {"port": dns, "protocol": "TCP"}]}:
            fail(f"{where}: the first egress rule is not DNS on port {dns}")
        stores, kafka = stores_of[name]
        got = {p["port"] for rule in rules[1:] for p in rule.get("ports") or []}
        want = expected_ports(values, stores, kafka)
        if got != want:
            fail(f"{where}: egress ports {sorted(got)}, expected {sorted(want)} (stores {stores})")
        for rule in rules[1:]:
            if rule.get("to", []) != (np.get("egressTo") or []):
                fail(f"{where}: egress destinations are not networkPolicy.egressTo")
    if by_selector:
        fail(f"NetworkPolicies selecting no Deployment: {sorted(by_selector)}")
