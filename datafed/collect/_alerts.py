"""Alerts on released windows: rules a collector declares, judged with the noise in mind.

A collector watches a task's windows as they are released and wants to be told when one
crosses a threshold -- "the share of pressure readings below 300 kPa is above 20 % in a
district for 2 windows". The rules live in the collector's own file (``alerts.toml``)
and are judged **by the collector**, on the released aggregate only: the nodes never see
a rule, and a rule never sees more than the collector may (with DP the window is noisy,
and its report count is not used: a share is the noisy selected buckets over the noisy
sum of the group's buckets).

Noise is taken into account: each window gives the **probability** that the true
(noise-free) value is beyond the threshold, given what was released -- with a flat
prior, ``P(true > t | released) = P(noise < released - t)`` for the linear statistic
``selected - t * group``, from the task's exact noise distribution (each aggregator's
discrete Laplace draw, or discrete Gaussian; :meth:`TaskSpec.noise_scale`). A rule fires
when that probability reaches its ``confidence`` in ``windows`` consecutive windows,
once per run of such windows; the alert carries the probability of the whole run.

.. code-block:: toml

    log = "alerts.jsonl"              # every alert fired, one JSON line (the collector's log)

    [tasks.pressure.grid]             # the task's columns: district x band, row-major
    district = ["north", "east", "south"]
    band = ["<250", "250-300", "300-350", "350-400", "400-450", ">=450"]

    [[rules]]
    name = "burst-pipe-{district}"
    task = "pressure"
    for_each = { district = ["north", "east", "south"] }
    share_of = ["{district}/<250", "{district}/250-300"]  # column names or glob patterns
    among = ["{district}/*"]
    above = 0.20
    windows = 2
    confidence = 0.95
    deliver = ["watch", "webhook:http://127.0.0.1:8099/alerts", "command:./page-duty.sh"]

A rule naming a column the task does not have is refused before anything is watched.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from datafed.collect._task import TaskSpec
from datafed.collect.errors import CollectError
from datafed.config.load import load_toml_model

__all__ = ["Alert", "AlertError", "AlertRule", "Alerts", "AlertsFile", "load_alerts"]

SAMPLES = 20_000


class AlertError(CollectError):
    """An alert rule cannot be used (an unknown column, a bad threshold or destination)."""


class TaskColumns(BaseModel):
    """A task's column names: a list, or a grid of axes (row-major)."""

    model_config = ConfigDict(extra="forbid")
    columns: list[str] = []
    grid: dict[str, list[str]] = {}

    def names(self) -> list[str]:
        """The column names, in the aggregate's order."""
        if self.columns:
            return list(self.columns)
        return ["/".join(p) for p in itertools.product(*self.grid.values())]


class RuleConfig(BaseModel):
    """One ``[[rules]]`` table (see module docs)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    task: str
    for_each: dict[str, list[str]] = {}
    share_of: list[str] = []
    among: list[str] = []
    total_of: list[str] = []
    above: float | None = None
    below: float | None = None
    windows: int = Field(default=1, ge=1, le=1000)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    deliver: list[str] = ["watch"]

    @model_validator(mode="after")
    def _check(self) -> RuleConfig:
        if (self.above is None) == (self.below is None):
            raise ValueError(f"rule {self.name!r}: give exactly one of above, below")
        if bool(self.share_of) == bool(self.total_of) or bool(self.share_of) != bool(self.among):
            raise ValueError(f"rule {self.name!r}: give share_of with among, or total_of")
        for d in self.deliver:
            check_destination(d)
        return self


class AlertsFile(BaseModel):
    """The collector's ``alerts.toml``."""

    model_config = ConfigDict(extra="forbid")
    log: Path = Path("alerts.jsonl")
    tasks: dict[str, TaskColumns] = {}
    rules: list[RuleConfig] = []


def check_destination(d: str) -> None:
    """``watch``, ``command:CMD`` or ``webhook:http://127.0.0.1...`` (loopback only)."""
    kind, _, rest = d.partition(":")
    if d == "watch" or (kind == "command" and rest.strip()):
        return
    if kind == "webhook":
        from urllib.parse import urlsplit

        url = urlsplit(rest)
        if url.scheme == "http" and url.hostname in ("127.0.0.1", "localhost", "::1"):
            return
        raise ValueError(f"webhook {rest!r}: only http:// on loopback (127.0.0.1)")
    raise ValueError(f"unknown alert destination {d!r}: watch, command:CMD or webhook:URL")


@dataclass(frozen=True)
class AlertRule:
    """One rule, its placeholders filled in, its columns resolved to indices."""

    name: str
    task: str
    selected: tuple[int, ...]
    group: tuple[int, ...] | None  # None: a total, not a share
    threshold: float
    above: bool
    windows: int
    confidence: float
    deliver: tuple[str, ...]


@dataclass(frozen=True)
class Alert:
    """An alert fired: which rule, over which windows, how sure, and what was seen."""

    rule: str
    task: str
    windows: tuple[int, ...]
    probability: float
    per_window: tuple[float, ...]
    observed: float
    threshold: float
    above: bool
    noise_stddev: float
    deliver: tuple[str, ...]

    def line(self) -> str:
        """One human line (``datafed collect watch`` prints it)."""
        what = "above" if self.above else "below"
        return (
            f"ALERT {self.rule} ({self.task}): {self.observed:.3g} {what} {self.threshold:g} "
            f"in {len(self.windows)} window(s) from {self.windows[0]}; probability "
            f"{self.probability:.3f} (noise ±{self.noise_stddev:.3g} per value)"
        )


def _resolve(
    patterns: Sequence[str], columns: Sequence[str], rule: str, task: str
) -> tuple[int, ...]:
    out: list[int] = []
    for pat in patterns:
        hits = [i for i, c in enumerate(columns) if fnmatch.fnmatchcase(c, pat)]
        if not hits:
            raise AlertError(
                f"rule {rule!r}: task {task!r} has no column {pat!r} "
                f"(its columns: {', '.join(columns[:12])}{', ...' if len(columns) > 12 else ''})"
            )
        out += [i for i in hits if i not in out]
    return tuple(out)


def expand_rules(cfg: RuleConfig, columns: Sequence[str]) -> list[AlertRule]:
    """The rule once per ``for_each`` combination, columns resolved (AlertError if unknown)."""
    keys = list(cfg.for_each)
    combos = list(itertools.product(*cfg.for_each.values())) if keys else [()]
    out = []
    for combo in combos:
        env = dict(zip(keys, combo, strict=True))

        def fill(text: str, env: dict[str, str] = env) -> str:
            try:
                return text.format(**env)
            except KeyError as exc:
                raise AlertError(f"rule {cfg.name!r}: no for_each value {exc}") from None

        name = fill(cfg.name)
        sel = [fill(p) for p in (cfg.share_of or cfg.total_of)]
        group = (
            _resolve([fill(p) for p in cfg.among], columns, name, cfg.task) if cfg.among else None
        )
        above = cfg.above is not None
        threshold = float(cfg.above if cfg.above is not None else cfg.below)  # type: ignore[arg-type]
        out.append(
            AlertRule(
                name,
                cfg.task,
                _resolve(sel, columns, name, cfg.task),
                group,
                threshold,
                above,
                cfg.windows,
                cfg.confidence,
                tuple(cfg.deliver),
            )
        )
    return out


def probability(
    rule: AlertRule, values: Sequence[float], spec: TaskSpec, seed: bytes
) -> tuple[float, float]:
    """``(P(the true value is beyond the threshold | released), released value)``.

    The statistic ``selected - t * group`` (share) or ``selected - t`` (total) is linear
    in the released values; its noise is the same combination of every element's noise
    (two aggregators' independent draws each).
    """
    n = len(values)
    coef = np.zeros(n)
    coef[list(rule.selected)] += 1.0
    if rule.group is not None:
        coef[list(rule.group)] -= rule.threshold
    stat = float(np.dot(coef, values)) - (0.0 if rule.group is not None else rule.threshold)
    sel = float(sum(values[i] for i in rule.selected))
    if rule.group is not None:
        total = float(sum(values[i] for i in rule.group))
        observed = sel / total if total > 0 else 0.0
    else:
        observed = sel
    scale = spec.noise_scale()
    if scale is None:
        beyond = stat > 0 if rule.above else stat < 0
        return (1.0 if beyond else 0.0), observed
    kind, value = scale
    used = coef[coef != 0]
    if kind == "gaussian":  # a sum of (discrete) Gaussians: Gaussian
        sd = math.sqrt(2 * float(value) * float(np.sum(used**2)))
        p_below = 0.5 * (1 + math.erf(stat / (sd * math.sqrt(2)))) if sd else float(stat > 0)
        return (p_below if rule.above else 1 - p_below), observed
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed).digest()[:8], "big"))
    q = 1 - math.exp(-1 / float(value))  # discrete Laplace: a difference of geometrics
    draws = rng.geometric(q, (4, SAMPLES, len(used))).astype(np.float64)
    noise = (draws[0] - draws[1] + draws[2] - draws[3]) @ used  # both aggregators' draws
    return float(np.mean(noise < stat) if rule.above else np.mean(noise > stat)), observed


@dataclass
class Alerts:
    """Rules bound to their tasks' columns, with the state of each rule's run of windows."""

    rules: list[AlertRule]
    log: Path
    specs: dict[str, TaskSpec] = field(default_factory=dict)
    _runs: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def check(
        self, task: str, start: int, duration: int, result: Any, noise_stddev: float
    ) -> list[Alert]:
        """Judge one released window of ``task``; the alerts it fires (each once per run)."""
        values = [float(v) for v in (result if isinstance(result, list) else [result])]
        fired = []
        for rule in (r for r in self.rules if r.task == task):
            p, observed = probability(
                rule, values, self.specs[task], f"{rule.name}/{start}".encode()
            )
            run = self._runs.setdefault(rule.name, [])
            if run and run[-1][0] + duration != start:
                run.clear()  # not consecutive
            if p < rule.confidence:
                run.clear()
                continue
            run.append((start, p))
            if len(run) == rule.windows:  # fires once when the run is long enough
                per = tuple(x for _, x in run)
                fired.append(
                    Alert(
                        rule.name,
                        task,
                        tuple(s for s, _ in run),
                        math.prod(per),
                        per,
                        observed,
                        rule.threshold,
                        rule.above,
                        noise_stddev,
                        rule.deliver,
                    )
                )
        return fired


def load_alerts(path: Path, specs: dict[str, TaskSpec], *, watching: str = "") -> Alerts:
    """Read ``alerts.toml`` and bind its rules to the tasks' columns (AlertError if unusable).

    With ``watching``, only that task's rules are bound (a file may hold rules for several
    tasks); a file with none for it is refused, as a watch it would not serve.
    """
    try:
        cfg = load_toml_model(path, AlertsFile)
    except CollectError:
        raise
    except Exception as exc:
        raise AlertError(f"{path}: {exc}") from exc
    rules: list[AlertRule] = []
    chosen = [rc for rc in cfg.rules if not watching or rc.task == watching]
    if watching and not chosen:
        raise AlertError(f"{path}: no rule for task {watching!r}")
    for rc in chosen:
        spec = specs.get(rc.task)
        if spec is None:
            raise AlertError(f"rule {rc.name!r}: unknown task {rc.task!r}")
        cols = cfg.tasks[rc.task].names() if rc.task in cfg.tasks else []
        width = int(spec.length or 1) if spec.vector else 1
        if not cols:
            cols = ["value"] if width == 1 else [f"[{i}]" for i in range(width)]
        if len(cols) != width:
            raise AlertError(f"task {rc.task!r} has {width} values, the file names {len(cols)}")
        rules += expand_rules(rc, cols)
    log = cfg.log if cfg.log.is_absolute() else path.parent / cfg.log
    return Alerts(rules, log, dict(specs))
