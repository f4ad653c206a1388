"""Fixtures for the offline manifest checks: repository paths, schemas, renderings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay_deploy import platform

REPO_ROOT = Path(__file__).resolve().parents[3]
K8S_DIR = REPO_ROOT / "infra" / "kubernetes"
APP_DIR = K8S_DIR / "apps" / "metadata-relay"
# The offline schemas, copied into the repository (source and version: its README.md).
SCHEMAS_DIR = REPO_ROOT / "tests" / "data" / "schemas"

DOMAIN = "mydia.dev"
EMAIL = "ops@mydia.dev"


@pytest.fixture(scope="session")
def schemas_dir() -> Path:
    return SCHEMAS_DIR


@pytest.fixture(scope="session")
def app() -> list[dict[str, Any]]:
    return platform.app_objects(domain=DOMAIN)


@pytest.fixture(scope="session")
def app_with_redis() -> list[dict[str, Any]]:
    return platform.app_objects(domain=DOMAIN, components=("components/redis",))


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]
