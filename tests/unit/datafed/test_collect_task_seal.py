"""Collection tasks (parameters, task ID, noise) and the sealing of the Helper's share.

The sealing is checked against an independent derivation (``cryptography``'s one-shot
HKDF instead of our extract/expand split), with node keys from a real PKI, and against
every rebinding a hostile Leader could try.
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
from fractions import Fraction
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from datafed.collect import (
    DpSpec,
    ReportBinding,
    SealedShare,
    SealError,
    ShareOpener,
    TaskSpec,
    seal_shares,
    spec_from_proto,
    spec_to_proto,
)
from datafed.pki.ca import identity_from_pem, load_signing_key, party_paths
from datafed.pki.peers import x25519_private, x25519_public

BASE = TaskSpec(
    name="water-use",
    vdaf="sumvec",
    leader="water-north",
    helper="water-east",
    time_precision=300,
    min_batch_size=100,
    max_measurement=63,
    length=3,
    start=1_700_000_000,
    end=1_800_000_000,
    dp=DpSpec("laplace", epsilon=0.5, contributions=5),
)


def test_every_parameter_changes_the_task_id() -> None:
    changes = dict(
        name="water-use2",
        vdaf="histogram",
        leader="water-south",
        helper="water-west",
        time_precision=60,
        min_batch_size=99,
        max_measurement=64,
        length=4,
        chunk_length=2,
        start=1_700_000_300,
        end=None,
        max_skew=61,
        dp=DpSpec("laplace", epsilon=0.25, contributions=5),
    )
    ids = {BASE.task_id}
    for field, value in changes.items():
        ids.add(dataclasses.replace(BASE, **{field: value}).task_id)
    ids.add(dataclasses.replace(BASE, dp=None).task_id)
    ids.add(dataclasses.replace(BASE, dp=DpSpec("gaussian", rho=0.5, contributions=5)).task_id)
    assert len(ids) == len(changes) + 3
    assert BASE.collect_task().ctx == b"datafed-collect/1" + BASE.task_id


def test_task_round_trips_through_the_wire() -> None:
    for spec in (BASE, dataclasses.replace(BASE, dp=None, start=None, end=None)):
        back = spec_from_proto(spec_to_proto(spec))
        assert back == spec and back.task_id == spec.task_id


@pytest.mark.parametrize(
    "bad",
    [
        dict(vdaf="median"),
        dict(vdaf="sum", max_measurement=None),
        dict(vdaf="histogram", length=0),
        dict(helper="water-north"),
        dict(end=1_600_000_000),
    ],
)
def test_bad_parameters_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(BASE, **bad)


def test_noise_is_calibrated_to_one_devices_contributions() -> None:
    # SumVec(3 x 63): one report moves the L1 norm by 3 * 63, a device by 5 reports' worth
    l1, l2sq = BASE.sensitivity()
    assert (l1, l2sq) == (Fraction(5 * 3 * 63), Fraction(25 * 3 * 63 * 63))
    assert BASE.noise_scale() == ("laplace", Fraction(5 * 3 * 63) / Fraction("0.5"))
    assert BASE.noise_stddev() == pytest.approx(math.sqrt(2) * 5 * 3 * 63 / 0.5)
    gauss = DpSpec("gaussian", rho=0.5, delta=1e-6)
    spec = dataclasses.replace(BASE, vdaf="count", dp=gauss)
    assert spec.noise_scale() == ("gaussian", Fraction(1))  # sigma^2 = 1 / (2 rho)
    assert gauss.epsilon_charged == pytest.approx(0.5 + 2 * math.sqrt(0.5 * math.log(1e6)))
    with pytest.raises(ValueError):
        DpSpec("laplace")


@pytest.fixture(scope="module")
def helper_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    from datafed import pki

    d: Path = tmp_path_factory.mktemp("pki")
    pki.init_ca(d)
    files = pki.issue(d, "node", "water-east")
    ident = identity_from_pem(files.cert.read_bytes())
    key = load_signing_key(party_paths(d, "node", "water-east").signing_key)
    return x25519_public(ident), x25519_private(key)


def binding(rid: bytes = b"\x01" * 16, time: int = 1_700_000_123) -> ReportBinding:
    return ReportBinding(BASE.task_id, rid, time, b"public share")


def test_seal_matches_an_independent_derivation(helper_keys: tuple[bytes, bytes]) -> None:
    public, private = helper_keys
    b = binding()
    sealed = seal_shares(public, [(b, b"helper share")])[0]
    shared = X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(sealed.enc)
    )
    label = b"datafed/collect/v1/helper-input-share\x00"
    info = label + BASE.task_id + b.report_id + struct.pack(">Q", b.time)
    key = HKDF(hashes.SHA256(), 32, salt=sealed.enc + public, info=info).derive(shared)
    aad = info + struct.pack(">I", len(b.public_share)) + b.public_share
    assert ChaCha20Poly1305(key).decrypt(bytes(12), sealed.ciphertext, aad) == b"helper share"
    assert ShareOpener(private).open(b, sealed) == b"helper share"


def test_attack_rebinding_or_tampering_does_not_open(helper_keys: tuple[bytes, bytes]) -> None:
    public, private = helper_keys
    b = binding()
    sealed = seal_shares(public, [(b, b"helper share"), (binding(b"\x02" * 16), b"other")])
    opener = ShareOpener(private)
    rebound = [
        dataclasses.replace(b, report_id=os.urandom(16)),  # a fresh ID: counted twice
        dataclasses.replace(b, time=b.time + 300),  # another window
        dataclasses.replace(b, task_id=bytes(32)),  # another task
        dataclasses.replace(b, public_share=b"public sharE"),
    ]
    for other in rebound:
        with pytest.raises(SealError):
            opener.open(other, sealed[0])
    with pytest.raises(SealError):  # the other report's ciphertext under this binding
        opener.open(b, SealedShare(sealed[0].enc, sealed[1].ciphertext))
    flipped = bytes([sealed[0].ciphertext[0] ^ 1]) + sealed[0].ciphertext[1:]
    for bad in (
        SealedShare(sealed[0].enc, flipped),
        SealedShare(bytes(32), sealed[0].ciphertext),  # a low-order point: all-zero agreement
        SealedShare(sealed[0].enc[:31], sealed[0].ciphertext),
        SealedShare(sealed[0].enc, b"short"),
    ):
        with pytest.raises(SealError):
            opener.open(b, bad)
    other_key = X25519PrivateKey.generate().private_bytes_raw()
    with pytest.raises(SealError):
        ShareOpener(other_key).open(b, sealed[0])
    assert str(SealError()) == "sealed input share does not open"  # no detail, no oracle


def test_opening_a_job_as_columns_agrees_with_opening_each_share(
    helper_keys: tuple[bytes, bytes],
) -> None:
    """``open_many`` (the Helper's job path) opens and refuses exactly what ``open`` does."""
    public, private = helper_keys
    b = binding()
    sealed = seal_shares(public, [(b, b"helper share"), (binding(b"\x02" * 16), b"other")])
    flipped = bytes([sealed[0].ciphertext[0] ^ 1]) + sealed[0].ciphertext[1:]
    cases = [
        (b, sealed[0]),  # opens
        (binding(b"\x02" * 16), sealed[1]),  # opens
        (dataclasses.replace(b, report_id=os.urandom(16)), sealed[0]),
        (dataclasses.replace(b, time=b.time + 300), sealed[0]),
        (dataclasses.replace(b, task_id=bytes(32)), sealed[0]),
        (dataclasses.replace(b, public_share=b"public sharE"), sealed[0]),
        (b, SealedShare(sealed[0].enc, sealed[1].ciphertext)),
        (b, SealedShare(sealed[0].enc, flipped)),
        (b, SealedShare(bytes(32), sealed[0].ciphertext)),  # a low-order point
        (b, SealedShare(sealed[0].enc[:31], sealed[0].ciphertext)),
        (b, SealedShare(sealed[0].enc, b"short")),  # its enc already agreed on, then short
        (b, sealed[0]),  # opens again after the refusals
    ]
    want: list[bytes | None] = []
    for bind, sh in cases:
        try:
            want.append(ShareOpener(private).open(bind, sh))
        except SealError:
            want.append(None)
    assert want[:2] == [b"helper share", b"other"] and want[-1] == b"helper share"
    assert want[2:-1] == [None] * (len(cases) - 3)
    for task_id in {bind.task_id for bind, _ in cases}:
        picked = [(bind, sh) for bind, sh in cases if bind.task_id == task_id]
        got = ShareOpener(private).open_many(
            task_id,
            [bind.report_id for bind, _ in picked],
            [bind.time for bind, _ in picked],
            [bind.public_share for bind, _ in picked],
            [sh.enc for _, sh in picked],
            [sh.ciphertext for _, sh in picked],
        )
        assert got == [
            w for (bind, _), w in zip(cases, want, strict=True) if bind.task_id == task_id
        ]


def test_a_batch_with_a_repeated_report_id_is_refused(helper_keys: tuple[bytes, bytes]) -> None:
    public, _ = helper_keys
    with pytest.raises(ValueError, match="repeat"):
        seal_shares(public, [(binding(), b"a"), (binding(time=5), b"b")])
