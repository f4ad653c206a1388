"""Writing the operator's secret-bearing files (config.yaml, known_hosts, the kubeconfig).

Every write goes to a fresh temporary file in the target's own folder, created with
``O_CREAT | O_EXCL`` and mode 0600 under a random name (``tempfile.mkstemp``), then renamed
over the target. So a planted ``config.yaml.tmp`` symlink is never followed, a stale
world-readable temp file is never reused, the result is always 0600, and a crash leaves either
the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, mode 0600, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
