"""An aggregation job's reports and answers as columns on the wire (no message per report).

The Leader sends a job's reports as :class:`~datafed.proto.v1.collect_pb2.PackedInits`:
one bytes field per column, each the concatenation of one fixed-size value per report
(sizes fixed by the task). The Helper answers with
:class:`~datafed.proto.v1.collect_pb2.PackedResps`: one error byte per report (an index
into :data:`ERRORS`, 0 for none) and one fixed-size payload per report. Jobs in the older
form (one ``VerifyInitMessage`` per report) are still read: :func:`read_inits` turns
either into the same :class:`Inits`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from datafed.collect import ENC_SIZE
from datafed.proto.v1 import collect_pb2
from datafed.protocols import ReportError
from nodes.errors import InvalidRequest

__all__ = ["ERRORS", "Inits", "pack_inits", "pack_resps", "read_inits", "read_resps"]

#: Error codes of packed answers: code ``i + 1`` is ``ERRORS[i]``.
ERRORS = (*(e.value for e in ReportError), "hpke_decrypt_error")


@dataclass(frozen=True)
class Inits:
    """A job's reports as columns (one list entry per report)."""

    ids: list[bytes]
    times: list[int]
    public_shares: list[bytes]
    encs: list[bytes]
    ciphertexts: list[bytes]
    payloads: list[bytes]

    def __len__(self) -> int:
        return len(self.ids)


def _split(data: bytes, n: int, what: str) -> list[bytes]:
    if n == 0:
        if data:
            raise ValueError(f"packed job: {what} without reports")
        return []
    size, rest = divmod(len(data), n)
    if rest:
        raise ValueError(f"packed job: {what} is not {n} equal parts")
    return [data[i * size : (i + 1) * size] for i in range(n)]


def pack_inits(msg: collect_pb2.AggregateInitRequest, inits: Inits) -> None:
    """Fill ``msg.packed`` with the job's columns."""
    p = msg.packed
    p.count = len(inits)
    p.report_ids = b"".join(inits.ids)
    p.times = struct.pack(f">{len(inits)}q", *inits.times)
    p.public_shares = b"".join(inits.public_shares)
    p.helper_encs = b"".join(inits.encs)
    p.helper_ciphertexts = b"".join(inits.ciphertexts)
    p.payloads = b"".join(inits.payloads)


def read_inits(msg: collect_pb2.AggregateInitRequest) -> Inits:
    """The job's reports, packed or one message each (malformed columns: InvalidRequest)."""
    if not msg.HasField("packed"):
        m = msg.inits
        return Inits(
            [bytes(x.report_id) for x in m],
            [int(x.time) for x in m],
            [bytes(x.public_share) for x in m],
            [bytes(x.helper_enc) for x in m],
            [bytes(x.helper_ciphertext) for x in m],
            [bytes(x.payload) for x in m],
        )
    p, n = msg.packed, msg.packed.count
    if len(msg.inits) or len(p.report_ids) != 16 * n or len(p.times) != 8 * n:
        raise InvalidRequest("packed job: the report IDs or times do not match the count")
    if len(p.helper_encs) != ENC_SIZE * n:
        raise InvalidRequest("packed job: the sealed shares do not match the count")
    try:
        return Inits(
            _split(p.report_ids, n, "report_ids"),
            list(struct.unpack(f">{n}q", p.times)),
            _split(p.public_shares, n, "public_shares"),
            _split(p.helper_encs, n, "helper_encs"),
            _split(p.helper_ciphertexts, n, "helper_ciphertexts"),
            _split(p.payloads, n, "payloads"),
        )
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc


def pack_resps(
    out: collect_pb2.AggregateInitResponse, answers: list[tuple[str, bytes]], size: int
) -> None:
    """Fill ``out.packed``: each answer's error code and its payload padded to ``size``."""
    codes = {e: i + 1 for i, e in enumerate(ERRORS)}
    out.packed.errors = bytes(codes[e] if e else 0 for e, _ in answers)
    pad = bytes(size)
    out.packed.payloads = b"".join(p if not e else pad for e, p in answers)


def read_resps(resp: collect_pb2.AggregateInitResponse, n: int) -> list[tuple[str, bytes]]:
    """The Helper's ``n`` answers ``(error or "", payload)``; ValueError if malformed."""
    if not resp.HasField("packed"):
        return [(m.error, bytes(m.payload)) for m in resp.resps]
    errors = bytes(resp.packed.errors)
    if len(errors) != n or any(c > len(ERRORS) for c in errors):
        raise ValueError("the Helper's packed answer does not match the job")
    payloads = _split(bytes(resp.packed.payloads), n, "payloads") if n else []
    return [(ERRORS[c - 1] if c else "", p) for c, p in zip(errors, payloads, strict=True)]
