from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tools import ServiceProcess, start_service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    """The service started as users start it, with defaults, on free loopback ports."""
    svc = start_service(tmp_path)
    yield svc
    svc.stop()
