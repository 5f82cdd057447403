"""Session fixtures of the chart tests: a real helm (installed if absent), renders, validators."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helmkit import REPO, Chart, Validator, find_tool


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """A working helm: .tools/bin/helm, else helm on PATH, else installed by scripts/install-helm.sh."""
    helm = find_tool("helm")
    if helm is None:
        done = subprocess.run(
            [str(REPO / "scripts" / "install-helm.sh")], capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            pytest.fail(f"no helm binary, and scripts/install-helm.sh failed:\n{done.stderr}", pytrace=False)
        helm = Path(done.stdout.strip().splitlines()[-1])
    version = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True, timeout=30)
    if version.returncode != 0:
        pytest.fail(f"{helm} does not run: {version.stderr}", pytrace=False)
    return helm


@pytest.fixture(scope="session")
def kubectl_bin(helm_bin: Path) -> Path:
    """kubectl, for `kubectl kustomize`: scripts/install-helm.sh puts it next to helm."""
    beside = helm_bin.parent / "kubectl"
    found = beside if beside.is_file() else find_tool("kubectl")
    if found is None:
        pytest.fail("no kubectl: run scripts/install-helm.sh", pytrace=False)
    return found


@pytest.fixture(scope="session")
def chart(helm_bin: Path) -> Chart:
    return Chart(helm_bin)


@pytest.fixture(scope="session")
def validator() -> Validator:
    return Validator()


@pytest.fixture(scope="session")
def values_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[[dict[str, Any]], str]:
    """Write a values dict to a YAML file and return its path (for -f)."""
    directory = tmp_path_factory.mktemp("values")
    counter = itertools.count()

    def write(values: dict[str, Any]) -> str:
        path = directory / f"values-{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(values))
        return str(path)

    return write
