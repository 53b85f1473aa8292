#!/usr/bin/env python3
"""Checks of the deployment files that the schema validators cannot make.

  check_manifests.py keda SCHEMA RENDERED...      KEDA resources against SCHEMA
  check_manifests.py refs RENDERED [--external NAME]...
                                                  every reference resolves inside one render
  check_manifests.py compose FILE                 references inside a Compose file

Prints one line per problem and exits 1 if there is any. Run by scripts/check-deploy.sh.
"""

import json
import re
import sys

import jsonschema
import yaml


def documents(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def name_of(doc):
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def check_keda(schema_path, paths):
    with open(schema_path, encoding="utf-8") as f:
        validator = jsonschema.Draft202012Validator(json.load(f))
    problems, seen = [], 0
    for path in paths:
        for doc in documents(path):
            if not str(doc.get("apiVersion", "")).startswith("keda.sh/"):
                continue
            seen += 1
            for err in validator.iter_errors(doc):
                where = "/".join(str(p) for p in err.absolute_path)
                problems.append(f"{path}: {name_of(doc)}: {where}: {err.message}")
    if seen == 0:
        problems.append(f"no KEDA resource in {' '.join(paths)}")
    return problems


def pod_specs(doc):
    kind = doc.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        template = doc["spec"]["template"]
        return [(template.get("metadata", {}).get("labels", {}), template["spec"])]
    return []


def selects(selector, labels):
    """A LabelSelector (matchLabels and matchExpressions) against a label set."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def check_refs(path, external):
    docs = documents(path)
    have = {(d["kind"], d["metadata"]["name"]) for d in docs}
    pods = [(name_of(d), labels, spec) for d in docs for labels, spec in pod_specs(d)]
    problems = []

    def need(kind, name, user):
        if (kind, name) not in have and name not in external:
            problems.append(f"{path}: {user} refers to {kind} {name!r}, which is not rendered")

    for user, _labels, spec in pods:
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    need("ConfigMap", source["configMapRef"]["name"], user)
                if "secretRef" in source:
                    need("Secret", source["secretRef"]["name"], user)
            for var in container.get("env", []):
                ref = var.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    need("Secret", ref["secretKeyRef"]["name"], user)
                if "configMapKeyRef" in ref:
                    need("ConfigMap", ref["configMapKeyRef"]["name"], user)
            ports = {p.get("name") for p in container.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str) and port not in ports:
                    problems.append(f"{path}: {user} {probe} names port {port!r}, not declared")
        if spec.get("serviceAccountName"):
            need("ServiceAccount", spec["serviceAccountName"], user)
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                need("Secret", volume["secret"]["secretName"], user)
            if "configMap" in volume:
                need("ConfigMap", volume["configMap"]["name"], user)

    def matching(selector):
        return [user for user, labels, _ in pods if selects(selector, labels)]

    for doc in docs:
        kind, spec = doc["kind"], doc.get("spec", {})
        if kind == "Service" and spec.get("selector"):
            if not matching({"matchLabels": spec["selector"]}):
                problems.append(f"{path}: {name_of(doc)} selects no pod")
        if kind in ("PodDisruptionBudget",) and not matching(spec["selector"]):
            problems.append(f"{path}: {name_of(doc)} selects no pod")
        if kind == "NetworkPolicy" and spec["podSelector"] and not matching(spec["podSelector"]):
            # The KEDA component's rule for an in-cluster broker may match nothing.
            if not doc["metadata"]["name"].endswith("-from-keda"):
                problems.append(f"{path}: {name_of(doc)} selects no pod")
        if kind in ("Deployment", "StatefulSet"):
            if not selects(spec["selector"], spec["template"]["metadata"]["labels"]):
                problems.append(f"{path}: {name_of(doc)} selector misses its own pods")
        if kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            target = spec["scaleTargetRef"]
            need(target.get("kind", "Deployment"), target["name"], name_of(doc))
        if kind == "TriggerAuthentication":
            for ref in spec.get("secretTargetRef", []):
                need("Secret", ref["name"], name_of(doc))
        if kind == "Ingress":
            for rule in spec.get("rules", []):
                for p in rule.get("http", {}).get("paths", []):
                    need("Service", p["backend"]["service"]["name"], name_of(doc))
    return problems


INTERPOLATION = re.compile(r"\$(\$|\{[A-Za-z_][A-Za-z0-9_]*(:?[-?+][^}]*)?\})")


def check_compose(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        rest = INTERPOLATION.sub("", line)
        if "$" in rest:
            problems.append(f"{path}:{number}: '$' that is neither '$$' nor '${{NAME…}}'")
    compose = yaml.safe_load(text)
    services = compose.get("services", {})
    volumes = set((compose.get("volumes") or {}).keys())
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for target, how in depends.items():
            if target not in services:
                problems.append(f"{path}: {name} depends on unknown service {target!r}")
                continue
            condition = how.get("condition")
            if condition == "service_healthy" and "healthcheck" not in services[target]:
                problems.append(f"{path}: {name} waits for {target} to be healthy; it has no healthcheck")
            if condition == "service_completed_successfully" and services[target].get("restart", "no") != "no":
                problems.append(f"{path}: {name} waits for {target} to complete; it restarts")
        for mount in service.get("volumes", []):
            source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source", "")
            if ":" in str(mount) and source and not source.startswith(("/", ".")) and source not in volumes:
                problems.append(f"{path}: {name} mounts undeclared volume {source!r}")
        if "healthcheck" not in service and service.get("restart", "no") != "no":
            problems.append(f"{path}: long-running service {name} has no healthcheck")
    return problems


def main(argv):
    if len(argv) >= 3 and argv[0] == "keda":
        problems = check_keda(argv[1], argv[2:])
    elif len(argv) >= 2 and argv[0] == "refs":
        external = [argv[i + 1] for i, a in enumerate(argv) if a == "--external"]
        problems = check_refs(argv[1], set(external))
    elif len(argv) == 2 and argv[0] == "compose":
        problems = check_compose(argv[1])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
