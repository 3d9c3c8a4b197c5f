"""The auditor's HTML report in a real headless Chromium (Debian's ``chromium`` package).

The page must load offline with no console error, draw every chart (non-empty SVG marks
with data), run no script and request nothing from the network; the test saves a
screenshot under its tmp dir.  Chromium is installed by the project's scripts (``make
setup``); a missing browser is a failure here, not a skip.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.audit.city import EVIL_NAME, NODES, Records, build_city, rec

CHARTS = {"use-requester", "use-purpose", "use-dataset", "epsilon", "denials", "agency-pairs",
          "circulation-purpose"}  # fmt: skip
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: run `make setup` (apt-get install chromium)")
    return found


def test_html_report_renders_in_chromium(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    city = build_city(tmp_path)
    city.witness.close()
    page_file = tmp_path / "report.html"
    cli = Path(sys.executable).parent / "datafed-audit"
    done = subprocess.run(
        [str(cli), "report", *(str(city.exports[n]) for n in NODES), "-p", str(city.policy),
         "--html", str(page_file)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh --user-data-dir
            executable_path=chromium(),
            headless=True,
            args=LAUNCH_ARGS,
            viewport={"width": 1200, "height": 900},
        )
        try:
            page = ctx.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.as_uri(), wait_until="load")
            charts = page.eval_on_selector_all(
                "svg[data-chart]",
                """els => els.map(e => {
                    const marks = [...e.querySelectorAll('[data-value]')];
                    const drawn = marks.filter(m => parseFloat(m.dataset.value) > 0);
                    const box = drawn.length ? drawn[0].getBBox() : {width: 0, height: 0};
                    const r = e.getBoundingClientRect();
                    return {id: e.dataset.chart, drawn: drawn.length, empty: e.dataset.empty,
                            w: r.width, h: r.height, mark_w: box.width, mark_h: box.height};
                })""",
            )
            scripts = page.evaluate("document.scripts.length")
            text = page.inner_text("body")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            ctx.close()
    assert errors == []
    assert requests == [page_file.as_uri()]  # the page alone: no network, no other file
    assert {c["id"] for c in charts} == CHARTS
    for c in charts:
        assert c["empty"] is None and c["drawn"] > 0, c
        assert c["w"] > 100 and c["h"] > 30 and c["mark_w"] > 0 and c["mark_h"] > 0, c
    assert scripts == 0 and EVIL_NAME in text  # the hostile name is text, never markup
    assert "all logs verified" in text and "witness quorum: 1 of 1 required — met" in text
    assert shot.stat().st_size > 20_000


LONG = "pipe_incidents_by_district_material_and_installation_year_2019_2025"


def _production_city(records: Records) -> None:
    """What a week in production writes: budgets the nodes enforce, operators' own acts,
    a dataset with a long name."""
    for node, entries in records.items():
        for r, _ in entries:
            if node == "water-north":
                object.__setattr__(r, "dataset", LONG)
            if node == "health-east" and r.epsilon > 0:  # the node enforces 3, the policy says 2
                r.details.update(budget_epsilon="3.0", budget_scope="dataset")
            if node == "transport" and r.decision == "released" and r.operation == "query":
                object.__setattr__(r, "epsilon", 0.25)
                r.details.update(budget_epsilon="5.0", budget_scope="dataset")
    admin = dict(requester="operator", requester_role="operator", job_id="", purpose="import")
    records["water-north"].append((rec("water-north", 110, operation="import", dataset=LONG,
                                       details={"file": "incidents.csv", "rows": "200000"},
                                       **admin), None))  # fmt: skip
    records["transport"].append((rec("transport", 111, operation="policy_reload", dataset="",
                                     reason="operator reload", **admin), None))  # fmt: skip
    records["health-east"].append((rec("health-east", 112, operation="policy_reload",
                                       dataset="", decision="denied", reason="bad column",
                                       **admin), None))  # fmt: skip


def test_html_report_budgets_per_node_admin_apart_full_labels(tmp_path: Path) -> None:
    """Epsilon per node and dataset (never a sum over nodes), the configured-vs-enforced
    budget mismatch flagged, imports and reloads apart from data uses, labels whole."""
    from playwright.sync_api import sync_playwright

    city = build_city(tmp_path, _production_city)
    city.witness.close()
    page_file = tmp_path / "report.html"
    cli = Path(sys.executable).parent / "datafed-audit"
    done = subprocess.run(
        [str(cli), "report", *(str(city.exports[n]) for n in NODES), "-p", str(city.policy),
         "--html", str(page_file)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium(), headless=True,
            args=LAUNCH_ARGS, viewport={"width": 1200, "height": 900},
        )  # fmt: skip
        try:
            page = ctx.new_page()
            page.goto(page_file.as_uri(), wait_until="load")
            kpis = page.eval_on_selector_all(
                ".kpi", "els => els.map(e => [e.lastChild.textContent, e.firstChild.textContent])"
            )
            mismatched = page.eval_on_selector_all(
                "tr.mismatch", "els => els.map(e => e.innerText)"
            )
            privacy = page.eval_on_selector_all(
                "#privacy ~ table", "els => els.length ? els[0].innerText : ''"
            )
            admin = page.eval_on_selector_all("#admin ~ table", "els => els.map(e => e.innerText)")
            cut = page.eval_on_selector_all(
                "svg[data-chart] text",
                """els => els.filter(t => {
                    const s = t.ownerSVGElement.getBoundingClientRect();
                    const r = t.getBoundingClientRect();
                    return r.left < s.left - 1 || r.right > s.right + 1 || r.top < s.top - 1;
                }).map(t => t.firstChild.nodeValue)""",
            )
            labels = page.eval_on_selector_all(
                "svg[data-chart=epsilon] text, svg[data-chart=use-dataset] text",
                "els => els.map(t => t.firstChild ? t.firstChild.nodeValue : '')",
            )
        finally:
            ctx.close()
    kpi = dict(kpis)
    assert not [k for k in kpi if "epsilon" in k]  # no total of separate nodes' budgets
    assert (kpi["uses"], kpi["denied"], kpi["administrative events"]) == ("22", "7", "3")
    assert kpi["budget mismatches"] == "1"
    assert len(mismatched) == 1 and "Health Department" in mismatched[0]
    assert "MISMATCH: the node enforces 3, the auditor's policy says 2" in mismatched[0]
    assert "Transport Agency" in privacy and "1.5" in privacy and "4.5" not in privacy
    assert len(admin) == 1 and "import" in admin[0] and "incidents.csv" in admin[0]
    assert admin[0].count("policy_reload") == 2
    assert f"Water Department: {LONG}" in labels  # whole, in the chart itself
    assert cut == []  # and no text runs outside its chart
