"""Inline SVG charts for the auditor's HTML report: generated here, no script, no network.

Every chart is one ``<svg data-chart="...">`` element; every mark carries ``data-label``,
``data-series`` and ``data-value`` attributes and a ``<title>`` tooltip, so the page needs
no JavaScript and a test can read what was drawn.  All text is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

__all__ = ["PALETTE", "hbars", "heatmap", "stacked_bars"]

#: Tableau 10, readable on white and distinguishable for most colour-blind readers.
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _num(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) and not v.is_integer() else f"{v:,.0f}"


def _open(chart: str, title: str, width: int, height: int) -> list[str]:
    t = escape(title)
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{t}" '
        f'data-chart="{escape(chart)}" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" {_FONT}>',
        f"<title>{t}</title>",
    ]


def _empty(chart: str, title: str) -> str:
    parts = _open(chart, title, 480, 40)
    parts[0] = parts[0].replace("<svg ", '<svg data-empty="1" ', 1)
    parts.append('<text x="8" y="24" fill="#666">no data</text></svg>')
    return "".join(parts)


def _text_w(texts: Sequence[str]) -> int:
    """Pixels that the longest of ``texts`` takes at the charts' 11 px font.

    Labels are never cut: the chart grows to hold them.
    """
    return int(6.6 * max((len(t) for t in texts), default=0)) + 12


def _legend(names: Sequence[str], x: int, y: int) -> list[str]:
    out = []
    for k, name in enumerate(names):
        yy = y + 16 * k
        color = PALETTE[k % len(PALETTE)]
        out.append(f'<rect x="{x}" y="{yy}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{x + 14}" y="{yy + 9}">{escape(name)}</text>')
    return out


def _legend_w(names: Sequence[str]) -> int:
    return 14 + _text_w(names)


def stacked_bars(
    chart: str, title: str, labels: Sequence[str], series: Mapping[str, Sequence[float]]
) -> str:
    """A vertical stacked bar chart: one bar per label, one colour per series.

    Parameters
    ----------
    chart : str
        The ``data-chart`` id.
    title : str
        Accessible title (also the tooltip of the chart).
    labels : Sequence[str]
        The x axis (e.g. days).
    series : Mapping[str, Sequence[float]]
        Values per series, aligned with ``labels``.
    """
    totals = [sum(v[i] for v in series.values()) for i in range(len(labels))]
    if not labels or not any(totals):
        return _empty(chart, title)
    plot_w = max(480, min(760, 24 * len(labels)))
    left, top, plot_h = 44, 10, 180
    width, height = left + plot_w + 16 + _legend_w(list(series)), top + plot_h + 70
    peak = max(totals)
    bar_w = plot_w / len(labels)
    parts = _open(chart, title, width, max(height, 20 + 16 * len(series)))
    parts.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" '
        f'y2="{top + plot_h}" stroke="#999"/>'
    )
    parts.append(f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{_num(peak)}</text>')
    parts.append(f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>')
    # x labels: at most one per ~70 px, slanted so that dates never overlap
    step = max(1, int(70 // bar_w) + (70 % bar_w > 0))
    for i, label in enumerate(labels):
        x = left + i * bar_w
        base = float(top + plot_h)
        for k, (name, values) in enumerate(series.items()):
            v = values[i]
            if not v:
                continue
            h = plot_h * v / peak
            base -= h
            parts.append(
                f'<rect class="bar" x="{x + 1:.1f}" y="{base:.1f}" width="{max(bar_w - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{PALETTE[k % len(PALETTE)]}" data-label="{escape(label)}" '
                f'data-series="{escape(name)}" data-value="{v:g}">'
                f"<title>{escape(label)} · {escape(name)}: {_num(v)}</title></rect>"
            )
        if i % step == 0:
            cx, cy = x + bar_w / 2, top + plot_h + 12
            parts.append(
                f'<text transform="translate({cx:.1f},{cy}) rotate(-25)" '
                f'text-anchor="end">{escape(label)}</text>'
            )
    parts += _legend(list(series), left + plot_w + 16, top)
    parts.append("</svg>")
    return "".join(parts)


def hbars(
    chart: str,
    title: str,
    rows: Sequence[tuple[str, Sequence[float]]],
    series: Sequence[str],
    *,
    limits: Sequence[float | None] | None = None,
) -> str:
    """Horizontal bars: one row per label, one bar per series (grouped).

    ``limits`` (one per row, optional) draws a dark marker at the row's limit, e.g. an
    epsilon budget, so a bar past its marker is over budget.
    """
    if not rows or (not any(any(v) for _, v in rows) and not any(limits or ())):
        return _empty(chart, title)
    label_w, plot_w, row_h = max(120, _text_w([r[0] for r in rows])), 380, 8 + 12 * len(series)
    peak = max([max(v, default=0) for _, v in rows] + [x for x in (limits or ()) if x] + [1e-12])
    height = 12 + row_h * len(rows) + 16 * len(series) + 8
    parts = _open(chart, title, label_w + plot_w + max(90, _legend_w(series) - plot_w), height)
    for r, (label, values) in enumerate(rows):
        y0 = 8 + r * row_h
        parts.append(
            f'<text x="{label_w - 6}" y="{y0 + row_h / 2 + 3:.1f}" '
            f'text-anchor="end">{escape(label)}<title>{escape(label)}</title></text>'
        )
        for k, v in enumerate(values):
            w = plot_w * v / peak
            y = y0 + 2 + 12 * k
            parts.append(
                f'<rect class="bar" x="{label_w}" y="{y}" width="{max(w, 0.5):.1f}" height="10" '
                f'fill="{PALETTE[k % len(PALETTE)]}" data-label="{escape(label)}" '
                f'data-series="{escape(series[k])}" data-value="{v:g}">'
                f"<title>{escape(label)} · {escape(series[k])}: {_num(v)}</title></rect>"
            )
            parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 9}">{_num(v)}</text>')
        limit = limits[r] if limits else None
        if limit is not None:
            x = label_w + plot_w * limit / peak
            parts.append(
                f'<line class="limit" x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + row_h - 2}" '
                f'stroke="#222" stroke-width="2" data-label="{escape(label)}" '
                f'data-value="{limit:g}"><title>limit {_num(limit)}</title></line>'
            )
    parts += _legend(series, label_w, 12 + row_h * len(rows))
    parts.append("</svg>")
    return "".join(parts)


def heatmap(
    chart: str, title: str, names: Sequence[str], counts: Mapping[tuple[str, str], int]
) -> str:
    """A symmetric matrix of counts between ``names`` (e.g. jobs shared by two agencies)."""
    if len(names) < 2 or not any(counts.values()):
        return _empty(chart, title)
    cell, label_w = 28, max(120, _text_w(names))
    n = len(names)
    # the column labels are turned 45 degrees: they reach up (and right) ~0.71 of their length
    top = max(60, int(0.71 * _text_w(names)) + 8)
    width, height = label_w + cell * n + top, top + cell * n + 10
    peak = max(counts.values())
    parts = _open(chart, title, width, height)
    for j, name in enumerate(names):
        x = label_w + j * cell + cell / 2
        parts.append(
            f'<text transform="translate({x:.1f},{top - 4}) rotate(-45)">{escape(name)}</text>'
        )
    for i, a in enumerate(names):
        y = top + i * cell
        parts.append(
            f'<text x="{label_w - 6}" y="{y + cell / 2 + 4:.1f}" '
            f'text-anchor="end">{escape(a)}</text>'
        )
        for j, b in enumerate(names):
            v = counts.get((a, b), 0) if i != j else 0
            shade = 0.08 + 0.92 * v / peak if v else 0.0
            parts.append(
                f'<rect class="cell" x="{label_w + j * cell}" y="{y}" width="{cell - 2}" '
                f'height="{cell - 2}" fill="{PALETTE[0]}" fill-opacity="{shade:.2f}" '
                f'stroke="#ddd" data-label="{escape(a)} × {escape(b)}" data-series="jobs" '
                f'data-value="{v}"><title>{escape(a)} × {escape(b)}: {v}</title></rect>'
            )
            if v:
                ink = "#fff" if shade > 0.55 else "#1d2733"
                cx, cy = label_w + j * cell + (cell - 2) / 2, y + cell / 2 + 3
                parts.append(
                    f'<text x="{cx:.1f}" y="{cy:.1f}" text-anchor="middle" fill="{ink}">{v}</text>'
                )
    parts.append("</svg>")
    return "".join(parts)
