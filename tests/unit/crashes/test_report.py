"""crashes.report.parse and the metric label bound (sans-I/O)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from metadata_relay.crashes.report import CrashReport, parse
from metadata_relay.crashes.routes import TypeLabels

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=10)


def test_the_originals_required_fields() -> None:
    assert parse({}) == ["Missing required field: error_type",
                         "Missing required field: error_message",
                         "Missing required field: stacktrace", "stacktrace must be a list"]
    report = parse({"error_type": " E ", "error_message": "", "stacktrace": [],
                    "extra": "ignored"})
    assert report == CrashReport("E", "", [])


@given(st.dictionaries(st.sampled_from(["error_type", "error_message", "stacktrace",
                                        "version", "environment", "occurred_at", "metadata",
                                        "other"]), JSON))
def test_parse_accepts_or_lists_problems_never_crashes(doc: dict[str, object]) -> None:
    result = parse(doc)
    if isinstance(result, list):
        assert result and all(isinstance(e, str) for e in result)
    else:
        assert result.error_type and isinstance(result.stacktrace, list)
        assert result.stacktrace_json().startswith("[")
        assert result.metadata_json().startswith("{")


def test_type_labels_are_safe_and_bounded() -> None:
    labels = TypeLabels(limit=3)
    assert labels.label('Bad"}\n{x') == "Bad____x"
    assert labels.label("A") == "A" and labels.label("B") == "B"
    assert labels.label("C") == "other"
    assert labels.label("A") == "A"  # known types keep their label
    assert labels.label("x" * 100) == "other"
