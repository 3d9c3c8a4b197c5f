"""Alert rules on released windows: columns, noise-aware probabilities, runs, delivery."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from datafed.collect import AlertError, DpSpec, TaskSpec, deliver, load_alerts

BANDS = '["<250", "250-300", "300-350", "350-400", "400-450", ">=450"]'


def _spec(dp: DpSpec | None = None) -> TaskSpec:
    return TaskSpec("pressure", "histogram", "a", "b", 300, 10, length=18, dp=dp)


def _file(tmp_path: Path, rule: str, deliver_to: str = '["watch"]') -> Path:
    path = tmp_path / "alerts.toml"
    path.write_text(
        'log = "alerts.jsonl"\n[tasks.pressure.grid]\ndistrict = ["north", "east", "south"]\n'
        f"band = {BANDS}\n[[rules]]\n{rule}\ndeliver = {deliver_to}\n"
    )
    return path


LOW = (
    'name = "burst-{d}"\ntask = "pressure"\nfor_each = { d = ["north", "east", "south"] }\n'
    'share_of = ["{d}/<250", "{d}/250-300"]\namong = ["{d}/*"]\nabove = 0.2\nwindows = 2\n'
    "confidence = 0.95"
)


def _window(low_south: int) -> list[int]:
    # 100 readings per district; south has low_south of them below 300 kPa
    north = [2, 3, 40, 40, 10, 5]
    south = [low_south // 2, low_south - low_south // 2, 100 - low_south, 0, 0, 0]
    return north + north + south


def test_a_rule_on_a_column_that_does_not_exist_is_refused_before_watching(tmp_path: Path) -> None:
    bad = LOW.replace('"{d}/<250"', '"{d}/<200"')
    with pytest.raises(AlertError, match=r"no column 'north/<200'.*north/<250"):
        load_alerts(_file(tmp_path, bad), {"pressure": _spec()})
    with pytest.raises(AlertError, match="unknown task"):
        load_alerts(_file(tmp_path, LOW.replace('task = "pressure"', 'task = "flow"')), {})
    with pytest.raises(AlertError, match="no rule for task 'flow'"):
        load_alerts(_file(tmp_path, LOW), {"pressure": _spec()}, watching="flow")
    with pytest.raises(AlertError, match="loopback"):
        load_alerts(_file(tmp_path, LOW, '["webhook:http://10.0.0.9/x"]'), {"pressure": _spec()})


def test_exact_windows_fire_once_per_run_of_windows(tmp_path: Path) -> None:
    alerts = load_alerts(_file(tmp_path, LOW), {"pressure": _spec()})
    assert [r.name for r in alerts.rules] == ["burst-north", "burst-east", "burst-south"]
    assert alerts.check("pressure", 0, 300, _window(60), 0.0) == []  # one window is not two
    fired = alerts.check("pressure", 300, 300, _window(70), 0.0)
    assert [(a.rule, a.windows, a.probability, a.observed) for a in fired] == [
        ("burst-south", (0, 300), 1.0, 0.7)
    ]
    assert alerts.check("pressure", 600, 300, _window(80), 0.0) == []  # the same run: once
    assert alerts.check("pressure", 900, 300, _window(5), 0.0) == []  # the run ends
    assert alerts.check("pressure", 1500, 300, _window(90), 0.0) == []  # not consecutive


def test_noise_is_taken_into_account(tmp_path: Path) -> None:
    noisy = _spec(DpSpec("laplace", epsilon=0.5, contributions=5))  # scale 10 per draw
    alerts = load_alerts(_file(tmp_path, LOW), {"pressure": noisy})
    far = alerts.check("pressure", 0, 300, _window(80), 20.0)
    assert far == []
    # Right at the threshold the released share says little: the probability is near 1/2.
    rule = next(r for r in alerts.rules if r.name == "burst-south")
    from datafed.collect._alerts import probability

    p_edge, _ = probability(rule, [float(x) for x in _window(20)], noisy, b"s")
    p_far, _ = probability(rule, [float(x) for x in _window(80)], noisy, b"s")
    p_none, _ = probability(rule, [float(x) for x in _window(2)], noisy, b"s")
    assert 0.3 < p_edge < 0.7 and 0.98 < p_far < 1 and p_none < 0.3
    fired = alerts.check("pressure", 300, 300, _window(80), 20.0)
    assert [a.rule for a in fired] == ["burst-south"] and 0.95 < fired[0].probability < 1


def test_delivery_to_a_webhook_a_command_and_the_collectors_log(tmp_path: Path) -> None:
    got: list[dict[str, object]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = tmp_path / "from-command.json"
    cmd = f'{sys.executable} -c \'import sys; open("{out}", "wb").write(sys.stdin.buffer.read())\''
    to = json.dumps(["watch", f"webhook:http://127.0.0.1:{server.server_port}/a", f"command:{cmd}"])
    alerts = load_alerts(
        _file(tmp_path, LOW.replace("windows = 2", "windows = 1"), to), {"pressure": _spec()}
    )
    (alert,) = alerts.check("pressure", 0, 300, _window(50), 0.0)
    printed: list[str] = []
    outcomes = deliver(alert, alerts.log, printed.append)
    server.shutdown()
    assert outcomes[to and "watch"] == "printed" and "ALERT burst-south" in printed[0]
    assert list(outcomes.values())[1:] == ["http 204", "exit 0"]
    assert got[0]["rule"] == "burst-south" and json.loads(out.read_text())["probability"] == 1.0
    (line,) = alerts.log.read_text().splitlines()
    record = json.loads(line)
    assert record["rule"] == "burst-south" and record["delivered"] == outcomes
