"""What a crash report is and how a submitted JSON object is checked (sans-I/O).

Required, as the original relay: ``error_type``, ``error_message`` and ``stacktrace`` (a
list of frames); optional ``version``, ``environment``, ``occurred_at`` (strings) and
``metadata`` (an object). Other fields are ignored. The answer to a bad report lists every
problem, in the original's words (``Missing required field: …``, ``stacktrace must be a
list``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_TYPE = 200  # characters of error_type
MAX_SHORT = 200  # characters of version, environment, occurred_at
MAX_FRAMES = 500
REQUIRED = ("error_type", "error_message", "stacktrace")
OPTIONAL = ("version", "environment", "occurred_at")


@dataclass(frozen=True, slots=True)
class CrashReport:
    error_type: str
    error_message: str
    stacktrace: list[Any]
    version: str | None = None
    environment: str | None = None
    occurred_at: str | None = None
    metadata: dict[str, Any] | None = None

    def stacktrace_json(self) -> str:
        return json.dumps(self.stacktrace, ensure_ascii=False, separators=(",", ":"))

    def metadata_json(self) -> str:
        return json.dumps(self.metadata or {}, ensure_ascii=False, separators=(",", ":"))


def parse(doc: dict[str, Any]) -> CrashReport | list[str]:
    """The report in ``doc``, or the list of what is wrong with it."""
    errors = [f"Missing required field: {name}" for name in REQUIRED if name not in doc]
    error_type, message, stacktrace = (doc.get(n) for n in REQUIRED)
    if "error_type" in doc and not (isinstance(error_type, str) and error_type.strip()
                                    and len(error_type) <= MAX_TYPE):
        errors.append(f"error_type must be a non-empty string of at most {MAX_TYPE} "
                      "characters")
    if "error_message" in doc and not isinstance(message, str):
        errors.append("error_message must be a string")
    if not isinstance(stacktrace, list):
        errors.append("stacktrace must be a list")
    elif len(stacktrace) > MAX_FRAMES:
        errors.append(f"stacktrace must have at most {MAX_FRAMES} frames")
    for name in OPTIONAL:
        value = doc.get(name)
        if value is not None and not (isinstance(value, str) and len(value) <= MAX_SHORT):
            errors.append(f"{name} must be a string of at most {MAX_SHORT} characters")
    metadata = doc.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        errors.append("metadata must be an object")
    if errors:
        return errors
    assert isinstance(error_type, str) and isinstance(message, str)
    assert isinstance(stacktrace, list)
    return CrashReport(error_type.strip(), message, stacktrace, doc.get("version"),
                       doc.get("environment"), doc.get("occurred_at"), metadata)
