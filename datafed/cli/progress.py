"""Live progress lines on stderr for the ``datafed`` commands (``--quiet`` turns them off).

One line per node (and one for the analyst's own work: keys, decryption), each listing
the steps of the job at that node as they start and end -- ``water-north: node info ✓ ·
query …`` -- rendered by ``rich`` as a live display on a terminal and as the final lines
otherwise.  A job that fails leaves no lines, only its one-line error.  The lines carry
step names only, never values.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from datafed.client.progress import Step

__all__ = ["ANALYST_LINE", "live_steps"]

#: The line of the analyst's own steps (key generation, combining the answers).
ANALYST_LINE = "analyst"
_MARKS = {"start": "…", "done": "✓", "failed": "✗"}


class _Lines:
    """The state behind the lines: per line, its steps and their marks."""

    def __init__(self, progress: Progress | None, keep: int | None) -> None:
        self._progress = progress
        self._keep = keep
        self._tasks: dict[str, TaskID] = {}
        self.steps: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def text(self, line: str) -> str:
        """One line as shown: ``node: step ✓ · step …``."""
        return f"{line}: " + " · ".join(f"{s} {m}" for s, m in self.steps[line].items())

    def __call__(self, step: Step) -> None:
        line = step.node or ANALYST_LINE
        with self._lock:
            steps = self.steps.setdefault(line, {})
            steps[step.step] = _MARKS[step.state]
            while self._keep is not None and len(steps) > self._keep:
                del steps[next(iter(steps))]
            if self._progress is None:
                return
            if line not in self._tasks:
                self._tasks[line] = self._progress.add_task("", total=None)
            running = any(m == _MARKS["start"] for m in steps.values())
            self._progress.update(
                self._tasks[line],
                description=self.text(line),  # shown literally (markup=False below)
                total=None if running else 1,
                completed=0 if running else 1,
            )


@contextmanager
def live_steps(
    console: Console, *, quiet: bool = False, keep: int | None = None
) -> Iterator[Callable[[Step], None] | None]:
    """A progress callback drawing live lines on ``console``; ``None`` when ``quiet``.

    ``keep``: show only the last steps of each line (training shows the latest round).
    On a terminal the lines are live and replaced by their final text when the job ends;
    elsewhere (a pipe, a log) the final lines are printed once at the end.  A job that
    fails prints none: its error stays one line.
    """
    if quiet:
        yield None
        return
    if not console.is_terminal:
        lines = _Lines(None, keep)
        yield lines
    else:
        progress = Progress(
            SpinnerColumn(finished_text=" "),
            TimeElapsedColumn(),
            TextColumn("{task.description}", markup=False),
            console=console,
            transient=True,
        )
        with progress:
            lines = _Lines(progress, keep)
            yield lines
    for line in lines.steps:
        console.print("  " + lines.text(line), markup=False, highlight=False, soft_wrap=True)
