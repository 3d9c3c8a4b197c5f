"""``datafed collect``: the collector's commands for live data (``docs/collect.md``).

``watch`` prints each window of a task as it closes, in a live table; ``get`` fetches one
window; ``windows`` lists the closed ones. Each window comes from both aggregators, each
answer checked against its receipts (:class:`datafed.collect.Collector`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

__all__ = ["register"]

out = Console(soft_wrap=True)
err = Console(stderr=True)
collect_app = typer.Typer(
    help="Collection of live data: windows of Prio3 tasks from their two aggregators.",
    no_args_is_help=True,
)
FED = typer.Option(..., "--federation", "-f", help="federation file (fed.toml)")
TASK = typer.Option(..., "--task", "-t", help="collection task name")
PURPOSE = typer.Option(..., "--purpose", help="declared purpose, checked by both aggregators")
LABELS = typer.Option("", "--labels", help="comma-separated names of a vector's elements")
SINCE = typer.Option("0", "--since", help="first window (seconds or ISO 8601)")


def _parse_time(text: str) -> int:
    """Seconds since the epoch from an integer or an ISO 8601 time (UTC if no zone)."""
    from datafed.collect import CollectError

    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CollectError(f"not a time: {text!r} (give seconds or ISO 8601)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp())


def _iso(t: int) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _table(title: str, labels: list[str], width: int) -> Table:
    table = Table(title=title)
    for col in ("window (UTC)", "reports", "rejected"):
        table.add_column(col, justify="right")
    for name in labels or ([f"[{i}]" for i in range(width)] if width <= 8 else ["result"]):
        table.add_column(name, justify="right")
    return table


def _row(window: Any, width: int) -> list[str]:
    from datafed.collect import Window

    span = f"{_iso(window.start)} +{window.duration}s"
    if not isinstance(window, Window):  # below the minimum batch size: never released
        return [span, "< min", "", *(["not released"] + [""] * (max(width, 1) - 1))]
    values = window.result if isinstance(window.result, list) else [window.result]
    if len(values) > 8:
        values = [", ".join(str(v) for v in values)]
    return [span, str(window.report_count), str(window.rejected_count), *map(str, values)]


def _width(spec: Any) -> int:
    return int(spec.length or 1) if spec.vector else 1


async def _watch(
    federation: Path,
    task: str,
    purpose: str,
    since: int,
    count: int,
    labels: list[str],
    alerts_file: Path | None = None,
) -> None:
    from datafed.collect import Collector, Window, deliver, load_alerts

    async with Collector.from_file(federation) as col:
        spec = (await col.task(task)).spec
        alerts = load_alerts(alerts_file, {task: spec}, watching=task) if alerts_file else None
        width = _width(spec)
        title = (
            f"{task}: {spec.vdaf} per {spec.time_precision} s window, {spec.leader} + {spec.helper}"
        )
        table, seen = _table(title, labels, width), 0
        with Live(table, console=out, refresh_per_second=4) as live:
            async for window in col.watch(task, purpose=purpose, since=since):
                table.add_row(*_row(window, width))
                seen += 1
                if isinstance(window, Window) and window.noise_stddev:
                    table.caption = f"noise: ±{window.noise_stddev:.3g} (1σ) per value"
                if alerts is not None and isinstance(window, Window):
                    for a in alerts.check(
                        task, window.start, window.duration, window.result, window.noise_stddev
                    ):
                        say = lambda m: live.console.print(m, markup=False)  # noqa: E731
                        await asyncio.to_thread(deliver, a, alerts.log, say)
                if count and seen >= count:
                    break


@collect_app.command("watch")
def watch(
    federation: Path = FED,
    task: str = TASK,
    purpose: str = PURPOSE,
    since: str = SINCE,
    count: int = typer.Option(0, "--count", help="stop after this many windows (0: never)"),
    labels: str = LABELS,
    alerts: Path | None = typer.Option(
        None, "--alerts", help="alert rules on the released windows (docs/collect.md#alerts)"
    ),
) -> None:
    """Print each window of TASK as it closes (a live table; Ctrl-C to stop).

    With --alerts, each window is judged against the file's rules for TASK; an alert
    fired is printed here, sent to its command or webhook, and written to the file's log.
    """
    names = [x for x in labels.split(",") if x]
    try:
        asyncio.run(_watch(federation, task, purpose, _parse_time(since), count, names, alerts))
    except KeyboardInterrupt:
        err.print("stopped")


@collect_app.command("get")
def get(
    federation: Path = FED,
    task: str = TASK,
    window: str = typer.Option(..., "--window", "-w", help="window start (seconds or ISO)"),
    purpose: str = PURPOSE,
    labels: str = LABELS,
    as_json: bool = typer.Option(False, "--json", help="print the window as JSON"),
) -> None:
    """Fetch one closed window of TASK from both aggregators."""
    from datafed.collect import Collector

    async def fetch() -> Any:
        async with Collector.from_file(federation) as col:
            spec = (await col.task(task)).spec
            return spec, await col.get(task, _parse_time(window), purpose=purpose)

    spec, w = asyncio.run(fetch())
    if as_json:
        payload = {
            "task": w.task,
            "start": w.start,
            "duration": w.duration,
            "result": w.result,
            "report_count": w.report_count,
            "rejected_count": w.rejected_count,
            "rejected": w.rejected,
            "epsilon": w.epsilon,
            "noise_stddev": w.noise_stddev,
            "receipts": [
                {"node": r.node, "decisions": [x.decision for x in r.records]} for r in w.receipts
            ],
        }
        print(json.dumps(payload))
        return
    width = _width(spec)
    table = _table(
        f"{task}: window {_iso(w.start)} UTC", [x for x in labels.split(",") if x], width
    )
    table.add_row(*_row(w, width))
    out.print(table)
    if w.rejected:
        out.print("  rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(w.rejected.items())))
    if w.noise_stddev:
        eps = ", ".join(f"{n} {e:g}" for n, e in w.epsilon.items())
        out.print(f"  noise ±{w.noise_stddev:.3g} (1σ) per value; epsilon charged: {eps}")
    out.print(f"  receipts verified: {', '.join(sorted({r.node for r in w.receipts}))}")


@collect_app.command("windows")
def windows(
    federation: Path = FED,
    task: str = TASK,
    purpose: str = PURPOSE,
    since: str = SINCE,
) -> None:
    """List the closed windows of TASK (releasable or below the minimum batch size)."""
    from datafed.collect import Collector

    async def fetch() -> Any:
        async with Collector.from_file(federation) as col:
            return await col.windows(task, purpose=purpose, since=_parse_time(since))

    for w in asyncio.run(fetch()):
        state = "releasable" if w.releasable else "below the minimum batch size"
        out.print(f"{w.start}  {_iso(w.start)} UTC  +{w.duration}s  {state}")


def register(app: typer.Typer) -> None:
    """Add the ``collect`` commands to ``app``.

    Parameters
    ----------
    app
        The ``datafed`` command-line application.
    """
    app.add_typer(collect_app, name="collect")
