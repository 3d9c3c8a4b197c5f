"""Jobs, their canonical digest, and signed statements: known answers and every forgery."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datafed.psi import (
    IdsColumn,
    InvalidPsiMessage,
    PsiJob,
    Statement,
    StatementBody,
    ValuesColumns,
    parse_ids,
    parse_values,
    sign_statement,
    verify_statement,
)

IDS = IdsColumn("tax-bureau", "taxpayers", "person_id")
VALUES = ValuesColumns("city-bank", "loans", "person_id", "amount")
N_KAT = (1 << 2047) + 1  # odd, 2048 bits: enough for the digest's known answer


def test_job_digest_known_answer() -> None:
    job = PsiJob("job-kat", IDS, VALUES, N_KAT, 16)
    fields = [b"job-kat", b"tax-bureau", b"taxpayers", b"person_id"]
    fields += [b"city-bank", b"loans", b"person_id", b"amount", N_KAT.to_bytes(256, "big")]
    data = b"".join(len(f).to_bytes(4, "big") + f for f in fields) + bytes([16])
    expected = hashlib.sha256(b"datafed/v1/psi-job\x00" + data).hexdigest()
    assert job.digest().hex() == expected
    assert expected == "98c5b133879821d85294d5f7284c28a69040ae3a1b855617128f99e9275ddb17"


@pytest.mark.parametrize(
    "change",
    [
        {"job_id": "job-kat2"},
        {"fixed_point_bits": 15},
        {"paillier_n": N_KAT + 2},
        {"ids": IdsColumn("tax-bureau", "taxpayers", "district")},
        {"values": ValuesColumns("city-bank", "loans", "person_id", "term_months")},
    ],
)
def test_every_field_changes_the_digest(change: dict[str, object]) -> None:
    job = PsiJob("job-kat", IDS, VALUES, N_KAT, 16)
    assert dataclasses.replace(job, **change).digest() != job.digest()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"paillier_n": (1 << 1023) + 1}, ValueError, "got 1024 bits"),
        ({"paillier_n": 1 << 2047}, ValueError, "must be odd"),
        ({"paillier_n": (1 << 8192) + 1}, ValueError, "got 8193 bits"),
        ({"paillier_n": True}, TypeError, "must be an int"),
        ({"fixed_point_bits": 33}, ValueError, "fixed_point_bits must be in [0, 32], got 33"),
        ({"job_id": "bad job id"}, ValueError, "invalid job id"),
        ({"values": ValuesColumns("tax-bureau", "l", "i", "v")}, ValueError, "different nodes"),
    ],
)
def test_bad_jobs_are_refused(kwargs: dict[str, object], error: type, message: str) -> None:
    args: dict[str, object] = {
        "job_id": "job-1",
        "ids": IDS,
        "values": VALUES,
        "paillier_n": N_KAT,
        "fixed_point_bits": 16,
    }
    with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]")):
        PsiJob(**{**args, **kwargs})  # type: ignore[arg-type]


def test_column_references_parse_and_refuse_injection() -> None:
    assert parse_ids("tax-bureau:taxpayers:person_id") == IDS
    assert parse_values("city-bank:loans:person_id:amount") == VALUES
    with pytest.raises(ValueError, match="expected node:dataset:id_column"):
        parse_ids("tax-bureau:taxpayers")
    with pytest.raises(ValueError, match="expected node:dataset:id_column:value_column"):
        parse_values("city-bank:loans:person_id")
    with pytest.raises(ValueError, match="invalid identifier"):
        parse_ids("tax-bureau:taxpayers:person_id; DROP TABLE taxpayers")
    with pytest.raises(ValueError, match="invalid node name"):
        parse_ids("Tax Bureau:taxpayers:person_id")


def test_statement_body_known_answer() -> None:
    body = StatementBody(
        node="tax-bureau",
        job_id="job-kat",
        job_digest=bytes(32),
        step="blind",
        count=3,
        payload_digest=bytes([1]) * 32,
        recipient_key=bytes([2]) * 32,
    )
    lp = lambda b: len(b).to_bytes(4, "big") + b  # noqa: E731
    expected = (
        lp(b"tax-bureau")
        + lp(b"job-kat")
        + lp(bytes(32))
        + lp(b"blind")
        + (3).to_bytes(8, "big")
        + (0).to_bytes(8, "big")
        + lp(bytes([1]) * 32)
        + lp(bytes([2]) * 32)
        + lp(b"")
        + (0).to_bytes(8, "big")
    )
    assert body.encode() == expected
    assert StatementBody.decode(expected) == body


bodies = st.builds(
    StatementBody,
    node=st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True),
    job_id=st.text(max_size=40),
    job_digest=st.binary(min_size=32, max_size=32),
    step=st.sampled_from(["blind", "exchange"]),
    count=st.integers(0, 2**64 - 1),
    payload_digest=st.binary(max_size=64),
    pairs=st.integers(0, 2**64 - 1),
    recipient_key=st.binary(max_size=32),
    peer_digest=st.binary(max_size=32),
    min_intersection=st.integers(0, 2**64 - 1),
)


@given(bodies)
def test_statement_body_round_trips(body: StatementBody) -> None:
    assert StatementBody.decode(body.encode()) == body


@given(bodies, st.data())
def test_truncated_or_extended_bodies_are_refused(body: StatementBody, data: st.DataObject) -> None:
    raw = body.encode()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(InvalidPsiMessage):
        StatementBody.decode(raw[:cut])
    with pytest.raises(InvalidPsiMessage):
        StatementBody.decode(raw + b"\x00")


def _blind(job: PsiJob) -> StatementBody:
    return StatementBody(
        node="tax-bureau",
        job_id=job.job_id,
        job_digest=job.digest(),
        step="blind",
        count=1,
        payload_digest=bytes(32),
        recipient_key=bytes(32),
    )


def test_statement_verifies_for_the_right_node_job_and_step(psi_pki, job) -> None:
    signed = sign_statement(_blind(job), psi_pki.tax.cert, psi_pki.tax.key)
    got = verify_statement(signed, psi_pki.ca, node="tax-bureau", job_id=job.job_id, step="blind")
    assert got == _blind(job)
    for kwargs in (
        {"node": "city-bank", "job_id": job.job_id, "step": "blind"},
        {"node": "tax-bureau", "job_id": "job-other", "step": "blind"},
        {"node": "tax-bureau", "job_id": job.job_id, "step": "exchange"},
    ):
        with pytest.raises(InvalidPsiMessage):
            verify_statement(signed, psi_pki.ca, **kwargs)  # type: ignore[arg-type]


def _flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :]


def test_forged_statements_are_refused_without_detail(psi_pki, job) -> None:
    good = sign_statement(_blind(job), psi_pki.tax.cert, psi_pki.tax.key)
    body = dataclasses.replace(_blind(job), node="city-bank")
    forgeries = {
        "flipped body bit": Statement(good.certificate_pem, _flip(good.body, 20), good.signature),
        "flipped signature bit": Statement(
            good.certificate_pem, good.body, _flip(good.signature, 5)
        ),
        "truncated signature": Statement(good.certificate_pem, good.body, good.signature[:-1]),
        "signed by another node": sign_statement(_blind(job), psi_pki.bank.cert, psi_pki.bank.key),
        "another node's key, this node's certificate": sign_statement(
            _blind(job), psi_pki.tax.cert, psi_pki.bank.key
        ),
        "analyst certificate": sign_statement(_blind(job), psi_pki.alice.cert, psi_pki.alice.key),
        "certificate from another CA": sign_statement(
            body, psi_pki.rogue_bank.cert, psi_pki.rogue_bank.key
        ),
        "garbage certificate": Statement(
            b"-----BEGIN CERTIFICATE-----\nAAAA", good.body, good.signature
        ),
    }
    for name, forged in forgeries.items():
        node = "city-bank" if "another CA" in name else "tax-bureau"
        with pytest.raises(InvalidPsiMessage) as info:
            verify_statement(forged, psi_pki.ca, node=node, job_id=job.job_id, step="blind")
        assert str(info.value) == "intersection-sum message failed verification", name
