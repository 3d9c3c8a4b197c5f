"""Training specs, wire round trips, the run-config bundle, settings and the result line."""

from __future__ import annotations

import base64
import json
import sys
from dataclasses import replace

import numpy as np
import pytest

from datafed.errors import ProtocolError
from datafed.fl.digest import arrays_digest
from datafed.fl.result import RESULT_MARKER, RoundSummary, TrainResult, find_result
from datafed.fl.serde import (
    bundle_from_text,
    bundle_to_text,
    grant_from_proto,
    grant_to_proto,
    round_from_proto,
    round_to_proto,
    spec_from_proto,
    spec_to_proto,
)
from datafed.fl.settings import RunSettings, fab_pyproject
from datafed.fl.spec import DpParams, RoundEntry, TrainingGrant, TrainingSpec
from datafed.proto.v1 import common_pb2

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SPEC = TrainingSpec("flood_readings", ("a", "b"), "y", 3, DpParams.local(0.5), "mlp:8", True)


def test_spec_grant_round_round_trip():
    assert spec_from_proto(spec_to_proto(SPEC)) == SPEC
    grant = TrainingGrant("n1", "job", SPEC, 10, "0" * 64)
    assert grant_from_proto(grant_to_proto(grant)) == grant
    entry = RoundEntry("job", 2, "fit", "a" * 64, "b" * 64, 10, True)
    assert round_from_proto(round_to_proto(entry)) == entry


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dataset": "x;drop"}, ValueError, "invalid identifier"),
        ({"feature_columns": ()}, ValueError, "at least one column"),
        ({"feature_columns": ("a", "a")}, ValueError, "distinct"),
        ({"label_column": "a"}, ValueError, "also a feature"),
        ({"rounds": 0}, ValueError, r"rounds must be in \[1, 1000\], got 0"),
        ({"rounds": True}, TypeError, "rounds must be an int"),
        ({"model": ""}, ValueError, "model must be"),
        ({"model": "mlp:abc"}, ValueError, "model must be"),  # the built-in's name is reserved
        ({"model": "os.path:join;rm"}, ValueError, "model must be"),
        ({"model": "pkg.mod:" + "f" * 200}, ValueError, "model must be"),
    ],
)
def test_bad_specs_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        replace(SPEC, **kwargs)


def test_dp_parameters_are_checked():
    assert DpParams().describe() == "off" and SPEC.epsilon_total == 1.5
    assert "eps=0.5" in SPEC.dp.describe()
    with pytest.raises(ValueError, match="not enabled"):
        DpParams(False, 1.0)
    with pytest.raises(ValueError, match=r"dp\.delta must be below 1"):
        DpParams.local(1.0, delta=1.0)
    with pytest.raises(ValueError, match=r"dp\.epsilon_per_round must be a positive"):
        DpParams.local(0.0)
    with pytest.raises(ValueError, match=r"Theorem A\.1"):
        DpParams.local(1.0)


def test_round_entries_are_checked():
    with pytest.raises(ValueError, match="phase must be one of"):
        RoundEntry("j", 1, "train", "a" * 64, "b" * 64, 1, True)
    with pytest.raises(ValueError, match="model_in_sha256 must be 64 lowercase hex"):
        RoundEntry("j", 1, "fit", "A" * 64, "b" * 64, 1, True)


def test_bundle_round_trip_and_corruption():
    req = common_pb2.SignedRequest(body=b"body", signature=b"sig")
    text = bundle_to_text("job-1", {"n2": req, "n1": req}, requester_cert=b"PEM")
    bundle = bundle_from_text(text)
    assert bundle.job_id == "job-1" and sorted(bundle.requests) == ["n1", "n2"]
    assert bundle.requester_cert == b"PEM" and bundle.requests["n1"] == req
    for bad in ["not base64!", base64.b64encode(b"\xff\xff\xff").decode(), "é"]:
        with pytest.raises(ProtocolError, match="training bundle is not valid"):
            bundle_from_text(bad)


def test_settings_round_trip_and_type_errors():
    s = RunSettings(num_server_rounds=4, secagg=False, min_nodes=1, lr=0.1)
    assert RunSettings.from_run_config(s.to_run_config()) == s
    assert RunSettings.from_run_config({"lr": 1, "unknown": "x"}).lr == 1.0
    with pytest.raises(TypeError, match="run config 'secagg' must be bool, got int"):
        RunSettings.from_run_config({"secagg": 1})
    with pytest.raises(ValueError, match="SecAgg\\+ needs at least 2 nodes"):
        RunSettings(min_nodes=1)
    with pytest.raises(ValueError, match="num-server-rounds must be at least 1"):
        RunSettings(num_server_rounds=0)


def test_fab_pyproject_declares_every_setting():
    doc = tomllib.loads(fab_pyproject())
    assert doc["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "datafed.fl.server_app:app",
        "clientapp": "nodes.fl.client_app:app",
    }
    assert doc["tool"]["flwr"]["app"]["config"] == RunSettings().to_run_config()


def _result() -> TrainResult:
    weights = [np.ones((2, 3), np.float32), np.zeros(1, np.float32)]
    rnd = RoundSummary(1, "a" * 64, arrays_digest(weights), ("n1", "n2"), 30)
    return TrainResult("job", "completed", arrays_digest(weights), weights, (rnd,), {"n1": 10})


def test_result_line_round_trip():
    r = _result()
    got = find_result(["noise", "\x1b[92mINFO\x1b[0m: " + r.to_line(), "more noise"])
    assert got is not None and got.model_sha256 == r.model_sha256 and got.rounds == r.rounds
    assert [w.tolist() for w in got.weights] == [w.tolist() for w in r.weights]
    assert find_result(["nothing here"]) is None


def test_result_with_swapped_weights_is_refused():
    r = _result()
    data = r.to_json()
    data["model_sha256"] = "0" * 64
    line = RESULT_MARKER + base64.b64encode(json.dumps(data).encode()).decode()
    with pytest.raises(ProtocolError, match="do not match the stated model digest"):
        find_result([line])
    with pytest.raises(ProtocolError, match="corrupt"):
        find_result([RESULT_MARKER + "%%%"])
