"""The auditor's report as one self-contained HTML page (``datafed-audit report --html``).

No network and no script: inline CSS, inline SVG charts from :mod:`audit.report.svg`, and a
Content-Security-Policy that forbids loading anything (``default-src 'none'``), so the page
can be mailed, archived or opened offline and shows the same thing everywhere.  Every value
from a ledger is escaped: requester names and purposes come from requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from audit.report import svg

__all__ = ["render_html"]

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:16px 24px;
color:#1d2733}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 6px;border-bottom:1px solid #ccd}
h3{font-size:15px;margin:16px 0 4px}p.note{color:#555;margin:4px 0 10px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #d5d9e0;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f3f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:600}.bad{color:#b42318;font-weight:600}
.warn{color:#9a6700}.kpis{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.kpi{border:1px solid #d5d9e0;border-radius:6px;padding:8px 12px;min-width:120px}
.kpi b{display:block;font-size:20px}svg{max-width:100%;height:auto;display:block;margin:6px 0}
@media print{h2{break-before:auto}svg{break-inside:avoid}}
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], num: Sequence[int] = ()) -> str:
    out = ["<table><tr>", *(f"<th>{escape(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>")
        for k, v in enumerate(row):
            cls = ' class="num"' if k in num else ""
            text = f"{v:.4g}" if isinstance(v, float) else str(v)
            out.append(f"<td{cls}>{escape(text)}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _kpis(items: Sequence[tuple[str, Any]]) -> str:
    return (
        '<div class="kpis">'
        + "".join(f'<div class="kpi"><b>{escape(str(v))}</b>{escape(k)}</div>' for k, v in items)
        + "</div>"
    )


def _section(anchor: str, title: str, note: str) -> list[str]:
    """The opening of a section: its title (linked as ``#anchor``) and a note (HTML) under it."""
    return [f'<h2 id="{anchor}">{title}</h2>', f'<p class="note">{note}</p>']


def _verification(rows: list[dict[str, Any]]) -> str:
    out = _section(
        "verification",
        "Verification of each log",
        "Every log below was verified against the auditor's pinned keys before this report "
        "read it: every entry, the Merkle tree, every signature and cosignature, and each "
        "private part against the commitment in its entry.",
    )
    body = []
    for r in rows:
        status = '<span class="ok">verified</span>' if r["ok"] else '<span class="bad">FAIL</span>'
        warn = "".join(f'<div class="warn">{escape(w)}</div>' for w in r["warnings"])
        body.append(
            f"<tr><td>{escape(r['agency'])}<br><small>{escape(r['origin'])}</small></td>"
            f"<td>{status}</td><td class=num>{r['entries']}</td>"
            f"<td class=num>{r['signed_up_to']}</td><td class=num>{r['witnessed_up_to']}</td>"
            f"<td>{escape(r['quorum_line'])}{warn}</td>"
            f"<td class=num>{r['private_parts_checked']}</td></tr>"
        )
    head = (
        "agency / log",
        "status",
        "entries",
        "signed up to",
        "witnessed up to",
        "witness quorum",
        "private parts checked",
    )
    out.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>")
    out += [*body, "</table>"]
    return "".join(out)


def _use(data: dict[str, Any]) -> str:
    t = data["uses_over_time"]
    out = _section(
        "use",
        "Data use over time",
        f"Uses per {escape(t['unit'])}: one operation admitted at one agency (a query, a "
        "protocol job, an intersection-sum, a training job).",
    )
    titles = {"requester": "by requester", "purpose": "by purpose", "dataset": "by dataset"}
    for dim, title in titles.items():
        out.append(f"<h3>{title.capitalize()}</h3>")
        out.append(svg.stacked_bars(f"use-{dim}", f"Data use {title}", t["buckets"], t["by"][dim]))
    return "".join(out)


def _budget_cell(r: dict[str, Any]) -> str:
    """The budget columns of one row: enforced, configured, and a flag where they differ."""
    enforced, configured = r["enforced_budget"], r["configured_budget"]
    cells = [
        "-" if enforced is None else _fmt(enforced),
        "-" if configured is None else _fmt(configured),
    ]
    if r["mismatch"]:
        flag = (
            f'<span class="bad">MISMATCH: the node enforces {_fmt(enforced)}, '
            f"the auditor's policy says {_fmt(configured)}</span>"
        )
    elif enforced is None and configured is not None:
        flag = '<span class="warn">the node recorded no budget (configured only)</span>'
    else:
        flag = '<span class="ok">agree</span>' if enforced is not None else "-"
    return "".join(f"<td class=num>{escape(c)}</td>" for c in cells) + f"<td>{flag}</td>"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _epsilon(rows: list[dict[str, Any]]) -> str:
    out = _section(
        "privacy",
        "Privacy budget: epsilon spent per node and dataset",
        "Each agency's node keeps its own differential-privacy budget per dataset (or per "
        "requester and dataset): the epsilon written on its entries, against the budget that "
        "node enforces (recorded on its admissions). Budgets of different nodes are separate, "
        "so their spending is never added up. The dark mark is the budget; a bar beyond it is "
        "over budget. A budget the node enforces that differs from the auditor's configured "
        "one is flagged.",
    )
    bars = [(f"{r['agency']}: {r['dataset']} · {r['requester']}", [r["spent"]]) for r in rows]
    out.append(
        svg.hbars(
            "epsilon",
            "Epsilon spent per node and dataset",
            bars,
            ["epsilon spent"],
            limits=[r["budget"] for r in rows],
        )
    )
    head = ("agency / node", "dataset", "budget of", "requesters", "charges", "epsilon spent",
            "left", "enforced budget", "configured budget", "check")  # fmt: skip
    table = ["<table><tr>", *(f"<th>{escape(h)}</th>" for h in head), "</tr>"]
    for r in rows:
        mark = ' class="mismatch"' if r["mismatch"] else ""
        table.append(
            f"<tr{mark}><td>{escape(r['agency'])}<br><small>{escape(r['node'])}</small></td>"
            f"<td>{escape(r['dataset'])}</td><td>{escape(r['requester'])}</td>"
            f"<td>{escape(', '.join(r['requesters']))}</td>"
            f"<td class=num>{r['charges']}</td><td class=num>{_fmt(r['spent'])}</td>"
            f"<td class=num>{'-' if r['left'] is None else _fmt(r['left'])}</td>"
            + _budget_cell(r)
            + "</tr>"
        )
    table.append("</table>")
    out.append("".join(table))
    return "".join(out)


def _admin(a: dict[str, Any]) -> str:
    out = _section(
        "admin",
        "Administrative events (not data uses)",
        f"{a['total']} act(s) of the agencies' operators on their own nodes: dataset imports "
        "and policy reloads. They are recorded in the same ledgers but are not uses of data "
        "by a requester, so they count in no total above.",
    )
    if a["recent"]:
        out.append(
            _table(
                ("time (UTC)", "agency", "entry", "operation", "dataset", "decision", "what"),
                [
                    (
                        r["time"],
                        r["agency"],
                        r["index"],
                        r["operation"],
                        r["dataset"] or "-",
                        r["decision"],
                        r["what"],
                    )
                    for r in a["recent"]
                ],
                num=(2,),
            )
        )
    return "".join(out)


def _denials(d: dict[str, Any]) -> str:
    out = _section(
        "denials",
        "Denials and their reasons",
        f"{d['total']} request(s) refused by the agencies' policies.",
    )
    bars = [(r["reason"], [r["count"]]) for r in d["by_reason"]]
    out.append(svg.hbars("denials", "Denials by reason", bars, ["denials"]))
    if d["recent"]:
        out.append("<h3>Most recent denials</h3>")
        out.append(
            _table(
                ("time (UTC)", "agency", "entry", "requester", "dataset", "purpose", "reason"),
                [
                    (
                        r["time"],
                        r["agency"],
                        r["index"],
                        r["requester"],
                        r["dataset"],
                        r["purpose"],
                        r["reason"],
                    )
                    for r in d["recent"]
                ],
                num=(2,),
            )
        )
    return "".join(out)


def _circulation(c: dict[str, Any]) -> str:
    share = f"{100 * c['cross_agency_jobs'] / c['jobs']:.0f}%" if c["jobs"] else "-"
    out = [
        *_section(
            "circulation",
            "Data circulation across the city",
            "How data moves between departments and agencies without being handed over: jobs "
            "that draw on several agencies' data, and cross-domain joins (intersection-sums "
            "linking one agency's records to another's).",
        ),
        _kpis(
            [
                ("jobs", c["jobs"]),
                ("cross-agency jobs", c["cross_agency_jobs"]),
                ("share cross-agency", share),
                ("cross-domain joins", c["cross_domain_joins"]),
                ("agencies", len(c["agencies"])),
            ]
        ),
    ]
    counts = {}
    for p in c["pairs"]:
        counts[(p["a"], p["b"])] = counts[(p["b"], p["a"])] = p["jobs"]
    out.append("<h3>Jobs shared between agencies</h3>")
    out.append(
        svg.heatmap("agency-pairs", "Jobs combining two agencies' data", c["agencies"], counts)
    )
    out.append("<h3>By purpose</h3>")
    bars = [(p["purpose"], [p["jobs"], p["cross_agency"], p["joins"]]) for p in c["by_purpose"]]
    out.append(
        svg.hbars(
            "circulation-purpose",
            "Jobs by purpose",
            bars,
            ["jobs", "cross-agency jobs", "cross-domain joins"],
        )
    )
    out.append(
        _table(
            ("purpose", "jobs", "cross-agency", "joins", "agencies involved"),
            [
                (p["purpose"], p["jobs"], p["cross_agency"], p["joins"], p["agencies"])
                for p in c["by_purpose"]
            ],
            num=(1, 2, 3, 4),
        )
    )
    if c["joined_datasets"]:
        out.append("<h3>Datasets joined</h3>")
        out.append(
            _table(
                ("dataset", "joined with", "jobs"),
                [(j["a"], j["b"], j["jobs"]) for j in c["joined_datasets"]],
                num=(2,),
            )
        )
    return "".join(out)


def render_html(data: dict[str, Any], title: str = "Data use audit report") -> str:
    """Return the page for :func:`audit.report.build.build_report` output."""
    t = data["totals"]
    period = " – ".join(data["period"]) + " UTC" if data["period"] else "no entries"
    ok = all(v["ok"] for v in data["verification"])
    status = '<span class="ok">all logs verified</span>' if ok else '<span class="bad">FAIL</span>'
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="note">{escape(period)} · generated {escape(data["generated_at"])} · '
        f"{status}</p>",
        _kpis(
            [
                ("logs", t["logs"]),
                ("entries", t["entries"]),
                ("uses", t["uses"]),
                ("released", t["released"]),
                ("denied", t["denied"]),
                ("budget mismatches", t["budget_mismatches"]),
                ("administrative events", t["admin_events"]),
            ]
        ),
        _verification(data["verification"]),
        _use(data),
        _epsilon(data["epsilon"]),
        _denials(data["denials"]),
        _circulation(data["circulation"]),
        _admin(data["admin"]),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        + "".join(body)
        + "</body></html>\n"
    )
