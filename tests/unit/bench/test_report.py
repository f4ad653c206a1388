"""``python -m bench report``: the status table of BENCHMARKS.md from the records. Records are
written here with the kit's own writer; nothing is measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench import _report
from bench._common import TIMES, Run

REPO = Path(__file__).resolve().parents[3]
PAGE = f"""# Benchmarks

Intro written by hand.

## Status

{_report.BEGIN}
stale table
{_report.END}

## Known limits

Also by hand.
"""


def write_record(results: Path, bench_id: str = "P1", **overrides: object) -> Path:
    run = Run(bench_id, ["--rounds", "3"], title=f"{bench_id}: cache hits under wrk.",
              reference="nginx", results_dir=results)
    run.ratio("vs_nginx", 0.7349, "median of per-round ratios", target=">= 0.6", headline=True)
    run.figure("p99", 12.5, "ms", target="< 10", headline=True)
    run.figure("errors", 3, target="== 0")
    run.figure("rps", 30000.0, "req/s")
    path = run.write()
    if overrides:
        record = json.loads(path.read_text())
        record.update(overrides)
        path.write_text(json.dumps(record))
    return path


@pytest.fixture
def results(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    out.mkdir()
    return out


@pytest.fixture
def page(tmp_path: Path) -> Path:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(PAGE)
    return path


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| **")]


def test_writes_the_table_between_the_markers_and_keeps_the_rest(results: Path,
                                                                 page: Path) -> None:
    write_record(results)
    assert _report.main(["--file", str(page), "--results", str(results)]) == 0
    text = page.read_text()
    assert "stale table" not in text
    assert text.startswith("# Benchmarks\n\nIntro written by hand.\n\n## Status\n\n")
    assert text.endswith(f"{_report.END}\n\n## Known limits\n\nAlso by hand.\n")
    header = "| " + " | ".join(_report.COLUMNS) + " |"
    assert header == "| Benchmark | Reference | Target | Latest | Date | Commit | Command |"
    assert header in text
    [row] = table_rows(text)
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    assert cells[0] == "**P1** cache hits under wrk"
    assert cells[1] == "nginx"
    assert cells[2] == f"vs nginx ≥ 0.6{TIMES}; p99 < 10 ms"
    # ratio first, pass/fail marked; a missed target outside the headline still shows
    assert cells[3] == f"vs nginx **0.73{TIMES}** ✅; p99 **12.5 ms** ❌; errors 3 ❌ (errors = 0)"
    assert cells[4].startswith("20")  # the date of the run
    assert cells[5]  # the commit
    assert cells[6] == "`python -m bench p1 --rounds 3`"


def test_rows_in_the_contract_order(results: Path, page: Path) -> None:
    for bench_id in ("T2", "W1", "T1-t", "P2", "T1"):
        write_record(results, bench_id)
    _report.main(["--file", str(page), "--results", str(results)])
    ids = [row.split("**")[1] for row in table_rows(page.read_text())]
    assert ids == ["P2", "W1", "T1", "T1-t", "T2"]


def test_check_says_whether_the_table_is_current(results: Path, page: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    write_record(results)
    args = ["--file", str(page), "--results", str(results)]
    assert _report.main([*args, "--check"]) == 1
    assert page.read_text() == PAGE  # --check never writes
    assert "not current" in capsys.readouterr().err
    _report.main(args)
    assert _report.main([*args, "--check"]) == 0


def test_transcribed_records_are_marked(results: Path, page: Path) -> None:
    write_record(results, source={"transcribed_from": "an older page"},
                 date="2026-11-26, 2026-11-27", commit="abc1234, def5678", dirty=False)
    _report.main(["--file", str(page), "--results", str(results)])
    text = page.read_text()
    [row] = table_rows(text)
    assert "| 2026-11-26, 2026-11-27 † | abc1234, def5678 |" in row
    assert _report.TRANSCRIBED_NOTE in text


def test_uncommitted_code_is_said(results: Path, page: Path) -> None:
    write_record(results, dirty=True, commit="abc1234")
    _report.main(["--file", str(page), "--results", str(results)])
    assert "| abc1234 (uncommitted changes) |" in table_rows(page.read_text())[0]


def test_no_records_gives_an_empty_table(results: Path, page: Path) -> None:
    _report.main(["--file", str(page), "--results", str(results)])
    assert "no records in bench/results/" in page.read_text()


@pytest.mark.parametrize(("name", "change", "message"), [
    ("P1", {"quick": True}, "quick"),
    ("P1", {"id": "P2"}, "does not match"),
    ("P1", {"headline": ["nope"]}, "nope"),
])
def test_bad_records_are_refused(results: Path, page: Path, capsys: pytest.CaptureFixture[str],
                                 name: str, change: dict[str, object], message: str) -> None:
    write_record(results, name, **change)
    assert _report.main(["--file", str(page), "--results", str(results)]) == 2
    assert message in capsys.readouterr().err
    assert page.read_text() == PAGE


def test_a_page_without_markers_is_refused(results: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain.md"
    plain.write_text("# Benchmarks\n")
    assert _report.main(["--file", str(plain), "--results", str(results)]) == 2
    assert "markers" in capsys.readouterr().err
    assert plain.read_text() == "# Benchmarks\n"


def test_cells_cannot_break_the_table(results: Path, page: Path) -> None:
    write_record(results, reference="a | b\nc")
    _report.main(["--file", str(page), "--results", str(results)])
    [row] = table_rows(page.read_text())
    assert "a \\| b c" in row
    assert row.count(" | ") == len(_report.COLUMNS) - 1


def test_the_repository_table_is_current() -> None:
    """BENCHMARKS.md shows what bench/results holds: after a run of record, run the report."""
    assert _report.main(["--check", "--file", str(REPO / "BENCHMARKS.md"),
                         "--results", str(REPO / "bench" / "results")]) == 0
