#!/usr/bin/env python3
"""Offline checks of deploy/ (there is no Docker engine or cluster in CI):

1. `docker-compose config` accepts the compose file.
2. `kubectl kustomize` renders every overlay, and kubernetes-validate accepts every resource
   against the Kubernetes schemas (strict: unknown fields are errors).
3. Every environment variable the compose file or a manifest gives a service is one that
   service reads (its `--help` lists it), so a typo cannot silently fall back to a default.
4. Every Deployment's prometheus.io/port annotation is the port its container serves metrics on
   (METRICS_ADDR), and every `pizzeria_*` metric the Grafana dashboards query is one the code
   records (a renamed metric would otherwise leave an empty panel).

Usage: deploy/validate.py <directory with the command-svc and query-svc binaries>
"""

import json
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
SOURCES = [DEPLOY.parent / name / "src" for name in ("command-svc", "query-svc", "shared")]
OVERLAYS = sorted(p for p in (DEPLOY / "k8s" / "overlays").iterdir() if p.is_dir())
KUBERNETES_VERSION = "1.30.0"
SERVICES = ("command-svc", "query-svc")
# Read by the logging library rather than by clap.
ALWAYS_READ = {"RUST_LOG"}


def run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"FAILED: {' '.join(args)}\n{result.stdout}{result.stderr}")
    return result.stdout


def env_read_by(binary: pathlib.Path) -> set[str]:
    return set(re.findall(r"\[env: ([A-Z0-9_]+)[=\]]", run(str(binary), "--help"))) | ALWAYS_READ


def check_env(where: str, service: str, names: set[str], known: dict[str, set[str]]) -> list[str]:
    unknown = sorted(names - known[service])
    return [f"{where}: {service} is given {name}, which it does not read" for name in unknown]


def compose_env() -> dict[str, set[str]]:
    rendered = yaml.safe_load(run("docker-compose", "-f", str(DEPLOY / "docker-compose.yml"), "config"))
    return {name: set((rendered["services"][name].get("environment") or {}).keys()) for name in SERVICES}


def manifest_env(documents: list[dict]) -> dict[str, set[str]]:
    by_kind = {}
    for doc in documents:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    result = {}
    for name in SERVICES:
        container = by_kind["Deployment"][name]["spec"]["template"]["spec"]["containers"][0]
        names = {env["name"] for env in container.get("env", [])}
        for source in container.get("envFrom", []):
            for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if ref not in source:
                    continue
                wanted = source[ref]["name"]
                # Generated names carry a hash suffix; Secrets made outside the overlay (prod)
                # are documented in its kustomization.yaml and checked through dev's.
                for generated, doc in by_kind.get(kind, {}).items():
                    if generated == wanted:
                        names |= set((doc.get("data") or {}).keys())
        result[name] = names
    return result


def check_scrape_ports(documents: list[dict]) -> list[str]:
    problems = []
    for doc in documents:
        if doc["kind"] != "Deployment":
            continue
        template = doc["spec"]["template"]
        port = (template["metadata"].get("annotations") or {}).get("prometheus.io/port")
        container = template["spec"]["containers"][0]
        metrics = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == "metrics"]
        listen = [e["value"] for e in container.get("env", []) if e["name"] == "METRICS_ADDR"]
        name = doc["metadata"]["name"]
        if port is None or metrics != [int(port)] or listen != [f"0.0.0.0:{port}"]:
            problems.append(f"{name}: prometheus.io/port {port}, metrics port {metrics}, METRICS_ADDR {listen}")
    return problems


def check_dashboards() -> list[str]:
    recorded = set()
    for source in SOURCES:
        for path in source.rglob("*.rs"):
            recorded |= set(re.findall(r'"(pizzeria_[a-z_]+)"', path.read_text()))
    problems = []
    for dashboard in sorted((DEPLOY / "observability" / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(dashboard.read_text())["panels"]:
            for target in panel.get("targets", []):
                for name in re.findall(r"\bpizzeria_[a-z_]+", target["expr"]):
                    if re.sub(r"_(bucket|count|sum)$", "", name) not in recorded:
                        problems.append(f"{dashboard.name}: panel {panel['title']!r} queries {name}, which nothing records")
    return problems


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binaries = pathlib.Path(sys.argv[1])
    known = {name: env_read_by(binaries / name) for name in SERVICES}
    problems = []

    for service, names in compose_env().items():
        problems += check_env("docker-compose.yml", service, names, known)
    print("ok   docker-compose.yml")

    for overlay in OVERLAYS:
        rendered = run("kubectl", "kustomize", str(overlay))
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
            file.write(rendered)
            file.flush()
            run("kubernetes-validate", "--strict", "--quiet", "-k", KUBERNETES_VERSION, file.name)
        documents = [doc for doc in yaml.safe_load_all(rendered) if doc]
        for service, names in manifest_env(documents).items():
            problems += check_env(f"overlay {overlay.name}", service, names, known)
        problems += [f"overlay {overlay.name}: {p}" for p in check_scrape_ports(documents)]
        print(f"ok   k8s/overlays/{overlay.name} ({len(documents)} resources, Kubernetes {KUBERNETES_VERSION} schemas)")

    dashboard_problems = check_dashboards()
    if not dashboard_problems:
        print("ok   every metric the dashboards query is recorded")
    problems += dashboard_problems

    if problems:
        sys.exit("\n".join(problems))
    print("ok   every environment variable set is read by its service")


if __name__ == "__main__":
    main()
