from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit import InvalidSignature
from audit.checkpoint import (
    Checkpoint,
    add_signatures,
    cosign,
    log_verifier,
    open_checkpoint,
    sign_checkpoint,
    witness_verifier,
)
from audit.note import (
    SIG_COSIGNATURE_V1,
    format_note,
    key_id,
    parse_note,
    parse_vkey,
    sign_line,
)

# golang.org/x/mod/sumdb/note note_test.go reference key and note (C2SP signed-note).
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIG = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
GO_NOTE = GO_TEXT + "\n\u2014 PeterNeumann " + GO_SIG + "\n"

LOG_KEY = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
W1 = Ed25519PrivateKey.from_private_bytes(b"\x02" * 32)
ORIGIN = "datafed.test/log"


def go_key() -> Ed25519PrivateKey:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]
    return Ed25519PrivateKey.from_private_bytes(seed)


def test_go_reference_note_signs_byte_for_byte() -> None:
    key = go_key()
    v = parse_vkey(GO_VKEY)
    assert v.vkey() == GO_VKEY
    assert v.key_id.hex() == "c74f20a3"
    assert format_note(GO_TEXT, [sign_line(GO_TEXT, "PeterNeumann", key)]) == GO_NOTE
    text, sigs = parse_note(GO_NOTE)
    assert text == GO_TEXT and v.matches(sigs[0])
    v.verify(text.encode(), sigs[0].signature)
    with pytest.raises(InvalidSignature):
        v.verify(text.replace("cryptography", "cryptographY").encode(), sigs[0].signature)


@pytest.mark.parametrize(
    "bad",
    [
        GO_NOTE.replace("\u2014", "-"),
        GO_NOTE[:-1],
        GO_TEXT,
        GO_NOTE.replace("PeterNeumann x", "Peter Neumann x"),
        GO_NOTE.replace("x08go", "x08g!"),
        GO_NOTE.replace("If you", "If\tyou"),
        b"\xff" + GO_NOTE.encode(),
        GO_TEXT + "\n",
    ],
)
def test_malformed_notes_rejected(bad: str | bytes) -> None:
    with pytest.raises(InvalidSignature):
        parse_note(bad)


@pytest.mark.parametrize(
    "bad",
    [
        GO_VKEY.replace("c74f20a3", "c74f20a4"),
        GO_VKEY.replace("+ARpc", "+AhRpc"),
        GO_VKEY[:-2],
        "PeterNeumann",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_bad_vkeys(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_vkey(bad)


def test_checkpoint_text_and_parse() -> None:
    cp = Checkpoint(ORIGIN, 20852163, bytes(range(32)))
    assert cp.text() == f"{ORIGIN}\n20852163\n{base64.b64encode(bytes(range(32))).decode()}\n"
    assert Checkpoint.parse(cp.text()) == cp
    for bad in [
        cp.text() + "ext\n",
        cp.text().replace("20852163", "020852163"),
        cp.text().replace("20852163", "-1"),
        cp.text()[:-1],
        f"{ORIGIN}\n1\nAAAA\n",
    ]:
        with pytest.raises(ValueError):
            Checkpoint.parse(bad)


def test_sign_open_checkpoint() -> None:
    cp = Checkpoint(ORIGIN, 3, hashlib.sha256(b"r").digest())
    note = sign_checkpoint(cp, LOG_KEY)
    opened = open_checkpoint(note, log_verifier(ORIGIN, LOG_KEY))
    assert opened.checkpoint == cp
    # forged body, another key, another origin: all refused
    with pytest.raises(InvalidSignature):
        open_checkpoint(note.replace("\n3\n", "\n4\n"), log_verifier(ORIGIN, LOG_KEY))
    with pytest.raises(InvalidSignature):
        open_checkpoint(note, log_verifier(ORIGIN, W1))
    with pytest.raises(InvalidSignature):
        open_checkpoint(note, log_verifier("datafed.test/other", LOG_KEY))
    other = sign_checkpoint(cp, W1)  # same name, other key: ignored as unknown -> no signature
    with pytest.raises(InvalidSignature):
        open_checkpoint(other, log_verifier(ORIGIN, LOG_KEY))


def test_cosignature_known_layout() -> None:
    cp = Checkpoint(ORIGIN, 5, hashlib.sha256(b"x").digest())
    sig = cosign(cp.text(), "witness.test/w1", W1, 1679315147)
    pub = W1.public_key()
    raw = witness_verifier("w", W1).public_key
    assert sig.key_id == key_id("witness.test/w1", SIG_COSIGNATURE_V1, raw)
    assert sig.signature[:8] == (1679315147).to_bytes(8, "big")
    message = b"cosignature/v1\ntime 1679315147\n" + cp.text().encode()
    assert isinstance(pub, Ed25519PublicKey)
    pub.verify(sig.signature[8:], message)


def test_cosigners_counted_and_bad_cosignature_rejected() -> None:
    cp = Checkpoint(ORIGIN, 5, hashlib.sha256(b"x").digest())
    note = sign_checkpoint(cp, LOG_KEY)
    w1 = witness_verifier("witness.test/w1", W1)
    w2key = Ed25519PrivateKey.from_private_bytes(b"\x03" * 32)
    w2 = witness_verifier("witness.test/w2", w2key)
    cosigned = add_signatures(note, [cosign(cp.text(), w1.name, W1, 10)])
    opened = open_checkpoint(cosigned, log_verifier(ORIGIN, LOG_KEY))
    assert opened.cosigners([w1, w2]) == {w1.name}
    # a cosignature over another checkpoint (same key) is detected
    other = Checkpoint(ORIGIN, 6, hashlib.sha256(b"y").digest())
    bad = add_signatures(note, [cosign(other.text(), w2.name, w2key, 10)])
    with pytest.raises(InvalidSignature):
        open_checkpoint(bad, log_verifier(ORIGIN, LOG_KEY)).cosigners([w1, w2])
    # a plain (type 0x01) signature by the witness key does not count as a cosignature
    plain = add_signatures(note, [sign_line(cp.text(), w1.name, W1)])
    assert open_checkpoint(plain, log_verifier(ORIGIN, LOG_KEY)).cosigners([w1]) == set()
