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

from tests.unit.audit.city import EVIL_NAME, NODES, build_city

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
