"""What an intersection-sum job names, its canonical digest, and what the analyst gets back."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from datafed.pki.identity import PARTY_NAME_PATTERN
from datafed.query.result import LedgerHeadInfo, NodeReceipt
from datafed.query.spec import check_identifier

__all__ = [
    "MAX_FIXED_POINT_BITS",
    "MAX_PAILLIER_BITS",
    "MIN_PAILLIER_BITS",
    "IdsColumn",
    "IntersectionSumResult",
    "PsiJob",
    "ValuesColumns",
    "parse_ids",
    "parse_values",
]

#: 2048-bit moduli give 112-bit security (NIST SP 800-57 Part 1 Rev. 5, Table 2).
MIN_PAILLIER_BITS = 2048
#: Bounds the work a node does per ciphertext for an analyst-chosen key.
MAX_PAILLIER_BITS = 8192
MAX_FIXED_POINT_BITS = 32
_NODE = re.compile(PARTY_NAME_PATTERN)
_JOB = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_JOB_CONTEXT = b"datafed/v1/psi-job\x00"


def _check_node(name: str) -> str:
    if not isinstance(name, str) or not _NODE.match(name):
        raise ValueError(f"invalid node name {name!r}")
    return name


@dataclass(frozen=True)
class IdsColumn:
    """The identifier column of the ids side: ``node:dataset:column``."""

    node: str
    dataset: str
    column: str

    def __post_init__(self) -> None:
        _check_node(self.node)
        check_identifier(self.dataset)
        check_identifier(self.column)


@dataclass(frozen=True)
class ValuesColumns:
    """The identifier and value columns of the values side: ``node:dataset:id:value``."""

    node: str
    dataset: str
    id_column: str
    value_column: str

    def __post_init__(self) -> None:
        _check_node(self.node)
        for name in (self.dataset, self.id_column, self.value_column):
            check_identifier(name)


def parse_ids(text: str) -> IdsColumn:
    """Parse ``node:dataset:column`` (the CLI's ``--ids``); ValueError if malformed."""
    return IdsColumn(*_split(text, "node:dataset:id_column"))


def parse_values(text: str) -> ValuesColumns:
    """Parse ``node:dataset:id_column:value_column`` (the CLI's ``--values``); ValueError too."""
    return ValuesColumns(*_split(text, "node:dataset:id_column:value_column"))


def _split(text: str, form: str) -> list[str]:
    """``text`` cut at ``:`` into the parts ``form`` names; ValueError if the count differs.

    The node may be qualified by its federation (``suzhou:water-wujiang:...``,
    docs/federation.md): one ``:`` more than ``form`` joins the first two parts.
    """
    parts = text.split(":")
    want = form.count(":") + 1
    if len(parts) == want + 1:
        parts = [f"{parts[0]}:{parts[1]}", *parts[2:]]
    if len(parts) != want:
        raise ValueError(f"expected {form}, got {text!r}")
    return parts


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


@dataclass(frozen=True)
class PsiJob:
    """One intersection-sum job as the analyst states it and both nodes check it.

    Parameters
    ----------
    job_id
        Recorded in both ledgers.
    ids, values
        The two sides; they must be different nodes.
    paillier_n
        The analyst's Paillier modulus: values are encrypted under it.
    fixed_point_bits
        Fractional bits of the values' fixed-point encoding.
    """

    job_id: str
    ids: IdsColumn
    values: ValuesColumns
    paillier_n: int
    fixed_point_bits: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.job_id, str) or not _JOB.match(self.job_id):
            raise ValueError(f"invalid job id {self.job_id!r}")
        if self.ids.node == self.values.node:
            raise ValueError("the ids and values sides must be on different nodes")
        n = self.paillier_n
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"Paillier modulus must be an int, got {type(n).__name__}")
        if not MIN_PAILLIER_BITS <= n.bit_length() <= MAX_PAILLIER_BITS or n % 2 == 0:
            raise ValueError(
                f"Paillier modulus must be odd with {MIN_PAILLIER_BITS}-{MAX_PAILLIER_BITS} "
                f"bits, got {n.bit_length()} bits"
            )
        if not 0 <= self.fixed_point_bits <= MAX_FIXED_POINT_BITS:
            raise ValueError(
                f"fixed_point_bits must be in [0, {MAX_FIXED_POINT_BITS}], "
                f"got {self.fixed_point_bits}"
            )

    def digest(self) -> bytes:
        """SHA-256 of a canonical, length-prefixed encoding; both nodes sign it.

        Returns
        -------
        bytes
            32 bytes.
        """
        fields = (
            self.job_id,
            self.ids.node,
            self.ids.dataset,
            self.ids.column,
            self.values.node,
            self.values.dataset,
            self.values.id_column,
            self.values.value_column,
        )
        n = self.paillier_n.to_bytes((self.paillier_n.bit_length() + 7) // 8, "big")
        data = b"".join(_lp(f.encode()) for f in fields) + _lp(n)
        return hashlib.sha256(_JOB_CONTEXT + data + bytes([self.fixed_point_bits])).digest()


@dataclass(frozen=True)
class IntersectionSumResult:
    """What the analyst learns: the intersection size and the sum over it, nothing else.

    Attributes
    ----------
    intersection_size
        Number of identifiers present on both sides.
    sum
        Sum of the values side's values over the intersection (decoded fixed point).
    sum_fixed
        The exact fixed-point sum (``sum * 2**fixed_point_bits``).
    fixed_point_bits
        Fractional bits of the encoding.
    job_id
        The job id recorded in both ledgers.
    ledgers
        Each node's ledger head after it recorded the job (ids side first).
    receipts
        Each node's verified receipt: its signed checkpoint and the ``approved`` and
        ``released`` entries of this job (ids side first).
    epsilon
        Epsilon charged per node (from its verified ``released`` entry); empty without DP.
    noise_stddev
        Standard deviation of the DP noise on ``sum`` (value units); 0 without DP.
    size_noise_stddev
        Standard deviation of the DP noise on ``intersection_size``; 0 without DP.

    Under differential privacy ``intersection_size`` and ``sum`` are noisy
    (see :mod:`datafed.psi._dp`).
    """

    intersection_size: int
    sum: float
    sum_fixed: int
    fixed_point_bits: int
    job_id: str
    ledgers: tuple[LedgerHeadInfo, ...] = ()
    receipts: tuple[NodeReceipt, ...] = ()
    epsilon: dict[str, float] = field(default_factory=dict)
    noise_stddev: float = 0.0
    size_noise_stddev: float = 0.0
