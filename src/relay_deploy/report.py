"""The plan/report: what each phase found, what it changed (or would change) and why.

A real run and a dry run record the same steps; only the wording ("would ...") differs.
Also the progress display used on every wait longer than a second.
"""

from __future__ import annotations

import base64
import contextlib
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TextIO, TypeVar

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

T = TypeVar("T")

PHASES = ("vps", "kubeconfig", "kubernetes", "app", "verify")


class Redacting(io.TextIOBase):
    """A text stream that replaces every known secret with ``***`` before it reaches
    ``stream``: the one place that keeps tokens, keys and passwords out of the tool's output,
    whatever message (an API error, an exception) would carry them."""

    def __init__(self, stream: TextIO, secrets: list[str] | None = None) -> None:
        self.stream = stream
        self.secrets: list[str] = [] if secrets is None else secrets  # may be shared

    def hide(self, *values: str) -> None:
        """Mask ``values`` and their base64 form (how a Secret's data carries them)."""
        for value in values:
            if not value or len(value) < 4:
                continue
            for form in (value, base64.b64encode(value.encode()).decode()):
                if form not in self.secrets:
                    self.secrets.append(form)
        self.secrets.sort(key=len, reverse=True)  # longest first: no partial leftovers

    def write(self, text: str) -> int:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()


def hide(console: Console, *values: str) -> None:
    """Keep ``values`` out of everything printed from now on (a newly generated secret)."""
    if isinstance(console.file, Redacting):
        console.file.hide(*values)


class PhaseFailed(Exception):
    """A phase could not complete; the message says what failed and what to do."""


@dataclass(frozen=True)
class Step:
    phase: str
    target: str
    action: str  # "found" (nothing to do), or a change verb: create, update, order, install...
    why: str

    @property
    def changed(self) -> bool:
        return self.action != "found"


@dataclass
class Report:
    console: Console
    dry_run: bool = False
    steps: list[Step] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def found(self, phase: str, target: str, why: str) -> None:
        self._add(Step(phase, target, "found", why))

    def change(self, phase: str, target: str, action: str, why: str) -> None:
        self._add(Step(phase, target, action, why))

    def fail(self, phase: str, target: str, why: str) -> None:
        self.failures.append(f"{phase}: {target}: {why}")
        self.console.print(f"  [red]✗ {target}[/red] — {why}", highlight=False)

    def _add(self, step: Step) -> None:
        self.steps.append(step)
        if not step.changed:
            self.console.print(f"  [green]=[/green] {step.target} — {step.why}", highlight=False)
        else:
            verb = f"would {step.action}" if self.dry_run else step.action
            self.console.print(f"  [yellow]+ {verb}[/yellow] {step.target} — {step.why}",
                               highlight=False)

    def changes(self, phase: str | None = None) -> list[Step]:
        return [s for s in self.steps if s.changed and (phase is None or s.phase == phase)]

    def phase_header(self, phase: str, purpose: str) -> None:
        self.console.rule(f"[bold]{phase}[/bold] — {purpose}", align="left")

    def phase_footer(self, phase: str) -> None:
        n = len(self.changes(phase))
        if n == 0:
            self.console.print(f"  {phase}: nothing to change")
        else:
            what = "would change" if self.dry_run else "changed"
            self.console.print(f"  {phase}: {what} {n} thing{'s' if n != 1 else ''}")


@contextlib.contextmanager
def waiting(console: Console, description: str) -> Iterator[None]:
    """A spinner with elapsed time while the body waits (transient: gone when done; nothing
    at all when the output is not a terminal)."""
    if not console.is_terminal:
        yield
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        progress.add_task(description, total=None)
        yield


def poll_until(console: Console, description: str, check: Callable[[], T | None], *,
               timeout: float, interval: float) -> T | None:
    """Call ``check()`` until it returns a truthy value or ``timeout`` passes (then None)."""
    deadline = time.monotonic() + timeout
    with waiting(console, description):
        while True:
            result = check()
            if result or time.monotonic() + interval > deadline:
                return result or None
            time.sleep(interval)
