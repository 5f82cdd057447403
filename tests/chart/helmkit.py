"""Support for the Helm chart tests: rendering with a real helm, and schema validation.

Nothing here talks to a cluster: the chart is rendered with `helm template` and every object is
checked against the Kubernetes schemas (from the `kubernetes-validate` wheel) and the Knative and
Strimzi schemas in `schemas/`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "alphapanda"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
RELEASE = "ap"
NAMESPACE = "alphapanda"
# kind v0.30 runs Kubernetes 1.34; validate against that API, strictly (unknown fields fail).
KUBERNETES_VERSION = "1.34"

Obj = dict[str, Any]

CRD_SCHEMAS = {
    ("serving.knative.dev/v1", "Service"): "knative-service.json",
    ("sources.knative.dev/v1beta1", "KafkaSource"): "kafkasource.json",
    ("eventing.knative.dev/v1alpha1", "KafkaSink"): "kafkasink.json",
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "kafkatopic.json",
}


def find_tool(name: str) -> Path | None:
    """The repo's .tools/bin/<name> (from scripts/install-helm.sh), else <name> on PATH."""
    local = REPO / ".tools" / "bin" / name
    if local.is_file() and os.access(local, os.X_OK):
        return local
    found = shutil.which(name)
    return Path(found) if found else None


@dataclass(frozen=True)
class Rendered:
    """The objects of one `helm template` run, with look-ups the tests share."""

    objects: tuple[Obj, ...]

    def of_kind(self, kind: str, api_version: str | None = None) -> list[Obj]:
        return [
            o
            for o in self.objects
            if o["kind"] == kind and (api_version is None or o["apiVersion"] == api_version)
        ]

    def named(self, kind: str, name: str) -> Obj:
        matches = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} {name!r}, found {len(matches)}"
        return matches[0]

    @property
    def ksvcs(self) -> dict[str, Obj]:
        return {o["metadata"]["name"]: o for o in self.of_kind("Service", "serving.knative.dev/v1")}

    @property
    def kafka_sources(self) -> list[Obj]:
        return self.of_kind("KafkaSource")

    @property
    def kafka_sinks(self) -> dict[str, Obj]:
        return {o["metadata"]["name"]: o for o in self.of_kind("KafkaSink")}


class HelmError(AssertionError):
    """helm exited non-zero; the message is its stderr."""


class Chart:
    """Runs helm against charts/alphapanda, caching renders so each value set renders once."""

    def __init__(self, helm: Path) -> None:
        self.helm = helm

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.helm), *args], capture_output=True, text=True, timeout=120, cwd=REPO)

    def lint(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("lint", "--strict", str(CHART), *args)

    def template(self, *args: str) -> Rendered:
        return self._template(args)

    @cache  # noqa: B019 - one Chart per session, so the cache lives exactly as long as it should
    def _template(self, args: tuple[str, ...]) -> Rendered:
        done = self.run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
        if done.returncode != 0:
            raise HelmError(done.stderr)
        return Rendered(tuple(d for d in yaml.safe_load_all(done.stdout) if d))

    def notes(self, *args: str) -> str:
        """The NOTES.txt an install with `args` prints (`helm install --dry-run=client`: no cluster)."""
        done = self.run("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", *args)
        if done.returncode != 0:
            raise HelmError(done.stderr)
        return done.stdout.partition("\nNOTES:\n")[2]

    def template_error(self, *args: str) -> str:
        """Render expecting failure; return helm's error output."""
        done = self.run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
        assert done.returncode != 0, f"helm template {' '.join(args)} should have failed"
        return done.stderr


def kubernetes_schema_dir() -> Path:
    """kubernetes-validate's strict schemas for KUBERNETES_VERSION."""
    base = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    path = Path(str(base)) / f"v{KUBERNETES_VERSION}.0-local-strict"
    if not path.is_dir():
        raise AssertionError(f"kubernetes-validate has no schemas for Kubernetes {KUBERNETES_VERSION}")
    return path


@dataclass
class Validator:
    """Validates an object against the schema of its apiVersion/kind; a kind without one fails."""

    k8s_dir: Path = field(default_factory=kubernetes_schema_dir)
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The Knative schema $refs the core definitions, so they share one registry.
        definitions = json.loads((self.k8s_dir / "_definitions.json").read_text())
        self.registry: Registry[Any] = Resource.from_contents(definitions) @ Registry()

    def _validator_for(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        if key not in self._cache:
            if key in CRD_SCHEMAS:
                schema = json.loads((SCHEMAS / CRD_SCHEMAS[key]).read_text())
            else:
                # kubernetes-validate's file naming: the group without its domain, then the version.
                group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
                file = self.k8s_dir / f"{kind.lower()}-{group_version}.json"
                if not file.is_file():
                    raise AssertionError(f"no schema for {api_version} {kind}: every kind must be checked")
                schema = json.loads(file.read_text())
            self._cache[key] = jsonschema.validators.validator_for(schema)(schema, registry=self.registry)
        return self._cache[key]

    def errors(self, obj: Obj) -> list[str]:
        validator = self._validator_for(obj["apiVersion"], obj["kind"])
        name = f"{obj['kind']}/{obj.get('metadata', {}).get('name')}"
        return [
            f"{name} at {'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in validator.iter_errors(obj)
        ]
