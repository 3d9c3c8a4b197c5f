"""The auditor's verifier: checks a whole log against the auditor's own policy.

Every problem is a :class:`Finding` with a stable code, and where it is (entry index or
checkpoint size).  Codes:

``unknown-origin``            the log's origin is not pinned in the policy
``checkpoint-malformed``      a checkpoint file is not a well-formed signed checkpoint
``checkpoint-wrong-origin``   a checkpoint of another log (swapped in)
``checkpoint-wrong-key``      no signature by the pinned log key (signed by another key)
``checkpoint-bad-signature``  the pinned key's signature does not verify (forged/altered)
``cosignature-invalid``       a pinned witness's cosignature does not verify
``fork``                      two validly signed checkpoints of one size, different roots
``quorum-not-met``            no checkpoint is cosigned by the policy's k of n witnesses
``entry-malformed``           leaf bytes are not a canonical data-use record
``entry-modified``            a leaf no longer hashes to its stored leaf hash
``entry-deleted``             an index is missing (later entries moved down)
``entries-reordered``         entries sit at positions other than their own index
``entry-duplicated``          an index appears twice (inserted entry)
``root-mismatch``             the recomputed tree does not match a signed checkpoint
``log-truncated``             a signed checkpoint covers more entries than the log holds
``log-rolled-back``           the log is smaller than a size the auditor verified before
``log-rewritten``             the log's history differs from what the auditor verified before
``export-inconsistent``       stored hashes do not cover the entries one to one, or the
                              private parts file is malformed
``private-mismatch``          an entry's private part is missing, malformed, does not match
                              the commitment in its leaf, or is given for an entry without one
``unsigned-tail``             entries after the newest checkpoint are covered by no signature
                              (a warning instead with ``allow_unsigned_tail``)
``log-behind-witness``        the log is shorter than a checkpoint a witness cosigned
``witness-inconsistent``      the log does not extend a checkpoint a witness cosigned
``witness-state-invalid``     a witness's checkpoint does not verify against the pinned keys
``witness-unavailable``       fewer than the quorum of witnesses vouch for the log
                              (the last four with ``witnesses``: :mod:`audit.witness_state`)

The report also says how far the witnesses vouch for the log (:meth:`VerifyReport.quorum_line`):
entries that no checkpoint with the policy's witness quorum covers rest on the operator's
signature alone, and an operator can rewrite them undetectably (docs/ledger.md).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import audit.merkle as merkle
from audit.checkpoint import Checkpoint, OpenedCheckpoint, open_checkpoint
from audit.errors import InvalidRecord, InvalidSignature
from audit.findings import Finding, VerifyReport, load_state, save_state
from audit.note import parse_note
from audit.policy import Policy
from audit.private import commitment, decode_opening
from audit.records import LEAF_PREFIXES, decode_leaf
from audit.witness_state import WitnessView, check_views, compare_with_witnesses

__all__ = ["Finding", "LogSource", "VerifyReport", "load_state", "save_state", "verify_log"]

_PREFIX = LEAF_PREFIXES[2]
_OLD_PREFIX = LEAF_PREFIXES[1]  # version 1 leaves: no commitment byte
_FLAG = len(_PREFIX) + 8  # offset of the commitment flag in a version 2 leaf
_CHUNK_LEVEL = 12  # leaves are hashed in aligned, perfect chunks of 2**12
_MAX_MISPLACED = 100_000


class LogSource(Protocol):
    """What the verifier reads: checkpoint notes, leaves and (optionally) stored leaf hashes."""

    def checkpoint_notes(self) -> list[tuple[str, bytes]]:
        """Return ``(label, note bytes)`` for every checkpoint."""
        ...

    def leaf_chunks(self, chunk: int) -> Iterator[list[bytes]]:
        """Yield the leaves in index order, ``chunk`` at a time."""
        ...

    def stored_hashes(self) -> bytes | None:
        """Return the concatenated stored leaf hashes, or ``None``."""
        ...

    def private_parts(self) -> dict[int, bytes]:
        """Return the private-part openings by entry index (ValueError if malformed)."""
        ...


def _origin_of(notes: list[tuple[str, bytes]]) -> str:
    for _, note in notes:
        try:
            return Checkpoint.parse(parse_note(note)[0]).origin
        except (InvalidSignature, ValueError):
            continue
    return ""


def _check_checkpoints(
    notes: list[tuple[str, bytes]], policy: Policy, report: VerifyReport
) -> list[OpenedCheckpoint]:
    log = policy.logs[report.origin]
    valid: list[OpenedCheckpoint] = []
    for label, note in notes:
        try:
            text, sigs = parse_note(note)
            cp = Checkpoint.parse(text)
        except (InvalidSignature, ValueError):
            report.add("checkpoint-malformed", f"{label} is not a signed checkpoint")
            continue
        if cp.origin != report.origin:
            report.add("checkpoint-wrong-origin", f"{label} is for {cp.origin!r}", size=cp.size)
            continue
        if not any(log.matches(s) for s in sigs):
            report.add(
                "checkpoint-wrong-key", f"{label} is not signed by the pinned key", size=cp.size
            )
            continue
        try:
            opened = open_checkpoint(note, log)
        except InvalidSignature:
            report.add(
                "checkpoint-bad-signature", f"{label} signature does not verify", size=cp.size
            )
            continue
        try:
            cosigners = opened.cosigners(policy.witnesses)
        except InvalidSignature:
            report.add(
                "cosignature-invalid", f"{label} has a bad witness cosignature", size=cp.size
            )
            continue
        valid.append(opened)
        report.cosigned[cp.size] = max(report.cosigned.get(cp.size, 0), len(cosigners))
        if len(cosigners) >= policy.quorum:
            report.published.append(cp.size)
    by_size: dict[int, bytes] = {}
    for o in valid:
        cp = o.checkpoint
        if by_size.setdefault(cp.size, cp.root_hash) != cp.root_hash:
            report.add("fork", "two signed checkpoints with different roots", size=cp.size)
    report.checkpoints = sorted({o.checkpoint for o in valid}, key=lambda c: c.size)
    return valid


@dataclass
class _Scan:
    """Running state of the leaf scan."""

    tree: merkle.CompactRange = field(default_factory=merkle.CompactRange)
    roots: dict[int, bytes] = field(default_factory=dict)
    misplaced: list[tuple[int, int]] = field(default_factory=list)
    openings: dict[int, bytes] = field(default_factory=dict)
    committed: set[int] = field(default_factory=set)


def _scan_chunk(
    leaves: list[bytes],
    start: int,
    scan: _Scan,
    wanted: set[int],
    stored: bytes | None,
    deep: bool,
    report: VerifyReport,
) -> None:
    sha, zero = merkle._sha256, b"\x00"
    hashes = [sha(zero + leaf).digest() for leaf in leaves]
    plen = len(_PREFIX)
    heads = [leaf[: plen + 8] for leaf in leaves]
    expected = [_PREFIX + i.to_bytes(8, "big") for i in range(start, start + len(leaves))]
    current: Iterable[int] = range(len(leaves))
    if heads != expected:  # rare: old version 1 leaves, malformed or misplaced ones
        unpack = struct.Struct(">Q").unpack_from
        current = []
        for k, leaf in enumerate(leaves):
            i = start + k
            if leaf[:plen] not in (_PREFIX, _OLD_PREFIX) or len(leaf) < plen + 8:
                report.add("entry-malformed", "not a data-use record leaf", index=i)
                continue
            if leaf[:plen] == _PREFIX:
                current.append(k)
            (claim,) = unpack(leaf, plen)
            if claim != i and len(scan.misplaced) < _MAX_MISPLACED:
                scan.misplaced.append((i, claim))
    _check_private(leaves, start, current, scan, report)
    if deep:
        for k, leaf in enumerate(leaves):
            try:
                decode_leaf(leaf)
            except InvalidRecord:
                report.add("entry-malformed", "not a canonical data-use record", index=start + k)
    if stored is not None:
        got = b"".join(hashes)
        want = stored[start * 32 : (start + len(leaves)) * 32]
        if got != want:
            for k, h in enumerate(hashes):
                if want[k * 32 : k * 32 + 32] != h:
                    report.add(
                        "entry-modified", "leaf does not match its stored hash", index=start + k
                    )
    tree = scan.tree
    cuts = sorted(s for s in wanted if start < s <= start + len(leaves))
    if len(leaves) == 1 << _CHUNK_LEVEL and not any(s < start + len(leaves) for s in cuts):
        tree.append_subtree(_CHUNK_LEVEL, merkle.perfect_root(hashes))
    else:
        for k, h in enumerate(hashes):
            tree.append(h)
            if start + k + 1 in wanted:
                scan.roots[start + k + 1] = tree.root()
    if start + len(leaves) in wanted:
        scan.roots[start + len(leaves)] = tree.root()


def _check_private(
    leaves: list[bytes], start: int, current: Iterable[int], scan: _Scan, report: VerifyReport
) -> None:
    """Check each version 2 leaf's commitment against the private part the log holds."""
    one, f = b"\x01", _FLAG
    for k in [k for k in current if leaves[k][f : f + 1] == one]:  # few: a fast filter first
        leaf = leaves[k]
        i = start + k
        scan.committed.add(i)
        opening = scan.openings.get(i)
        if opening is None:
            report.add(
                "private-mismatch",
                "the leaf commits to a private part that the log does not hold",
                index=i,
            )
            continue
        try:
            decode_opening(opening)
        except ValueError:
            report.add("private-mismatch", "the private part is malformed", index=i)
            continue
        if bytes.fromhex(commitment(opening)) != leaf[_FLAG + 1 : _FLAG + 33]:
            report.add(
                "private-mismatch", "the private part does not match its commitment", index=i
            )


def _classify_misplaced(misplaced: list[tuple[int, int]], report: VerifyReport) -> None:
    if not misplaced:
        return
    positions = {p for p, _ in misplaced}
    claims = [c for _, c in misplaced]
    seen: set[int] = set()
    for p, c in misplaced:
        if c in seen:
            report.add("entry-duplicated", f"index {c} appears twice", index=p)
        seen.add(c)
    missing = sorted(positions - set(claims))
    for m in missing:
        report.add("entry-deleted", "this index is missing; later entries moved down", index=m)
    if not missing:
        p, c = misplaced[0]
        report.add(
            "entries-reordered", f"{len(misplaced)} entries out of place (holds entry {c})", index=p
        )


def verify_log(
    source: LogSource,
    policy: Policy,
    *,
    origin: str | None = None,
    deep: bool = False,
    progress: Callable[[int], None] | None = None,
    allow_unsigned_tail: bool = False,
    witnesses: Sequence[WitnessView] | None = None,
) -> VerifyReport:
    """Verify every entry, checkpoint, cosignature and the tree of one log.

    Parameters
    ----------
    source : LogSource
        An export directory or a log fetched from a node.
    policy : Policy
        The auditor's pinned logs, witnesses and quorum (never taken from ``source``).
    origin : str, optional
        The log to expect; by default the origin named in the first readable checkpoint.
    deep : bool
        Also decode every leaf as a canonical data-use record.
    progress : callable, optional
        Called with the number of leaves processed after each chunk.
    allow_unsigned_tail : bool
        Report entries after the newest checkpoint as a warning, not an ``unsigned-tail``
        finding (a node signs within a bounded delay, so a fresh export may have some).
    witnesses : sequence of WitnessView, optional
        What the pinned witnesses hold (their newest cosigned checkpoints, obtained
        before the log): the log must extend each, and ``quorum`` of them must vouch.

    Returns
    -------
    VerifyReport
        With every finding; ``report.ok`` is True only if nothing failed.
    """
    notes = source.checkpoint_notes()
    report = VerifyReport(origin or _origin_of(notes))
    report.quorum, report.witnesses = policy.quorum, len(policy.witnesses)
    if report.origin not in policy.logs:
        report.add("unknown-origin", f"log {report.origin!r} is not pinned in the policy")
        return report
    _check_checkpoints(notes, policy, report)
    if policy.quorum and not report.published:
        report.add("quorum-not-met", f"no checkpoint is cosigned by {policy.quorum} witnesses")
    state = load_state(policy.state).get(report.origin)
    held = [] if witnesses is None else check_views(witnesses, policy, report)
    wanted = {c.size for c in report.checkpoints} | ({state[0]} if state else set())
    wanted |= {h.checkpoint.size for h in held}
    scan = _scan_log(source, wanted, deep, progress, report)
    _classify_misplaced(scan.misplaced, report)
    _check_uncommitted_private(scan, report)
    _check_roots(scan, wanted, report)
    if state is not None:
        _check_history(state, scan, report)
    _check_signed_tail(policy, report, allow_unsigned_tail)
    if witnesses is not None:
        compare_with_witnesses(held, scan.roots, scan.tree.root(), report)
    return report


def _scan_log(
    source: LogSource,
    wanted: set[int],
    deep: bool,
    progress: Callable[[int], None] | None,
    report: VerifyReport,
) -> _Scan:
    """Read the private parts, then scan every leaf in chunks (``report.entries``: how many)."""
    stored = source.stored_hashes()
    scan, n = _Scan(), 0
    try:
        scan.openings = dict(source.private_parts())
    except ValueError as exc:
        report.add("export-inconsistent", f"private parts: {exc}")
    report.private = len(scan.openings)
    try:
        for chunk in source.leaf_chunks(1 << _CHUNK_LEVEL):
            _scan_chunk(chunk, n, scan, wanted, stored, deep, report)
            n += len(chunk)
            if progress is not None:
                progress(len(chunk))
    except ValueError as exc:
        report.add("log-truncated", str(exc), index=n)
    report.entries = n
    if stored is not None and len(stored) != 32 * n:
        report.add("export-inconsistent", f"{len(stored) // 32} stored hashes for {n} entries")
    return scan


def _check_uncommitted_private(scan: _Scan, report: VerifyReport) -> None:
    """A private part given for an entry whose leaf commits to none is a mismatch."""
    for i in sorted(set(scan.openings) - scan.committed):
        report.add(
            "private-mismatch",
            "a private part is given for an entry without a commitment",
            index=i,
        )


def _check_roots(scan: _Scan, wanted: set[int], report: VerifyReport) -> None:
    """Each signed checkpoint's root against the root recomputed from the entries."""
    n = report.entries
    if 0 in wanted:
        scan.roots[0] = merkle.EMPTY_ROOT
    for cp in report.checkpoints:
        if cp.size > n:
            report.add("log-truncated", f"signed for {cp.size} entries, log has {n}", size=cp.size)
        elif scan.roots[cp.size] != cp.root_hash:
            report.add("root-mismatch", "entries do not hash to the signed root", size=cp.size)


def _check_history(state: tuple[int, bytes], scan: _Scan, report: VerifyReport) -> None:
    """The log against the ``(size, root)`` verified before: neither shrunk nor rewritten."""
    n, latest = report.entries, report.latest
    if state[0] > max(n, latest.size if latest else 0):
        report.add("log-rolled-back", f"verified at size {state[0]} before, now {n}", size=state[0])
    elif state[0] <= n and scan.roots.get(state[0]) != state[1]:
        report.add("log-rewritten", "history differs from the previous audit", size=state[0])


def _check_signed_tail(policy: Policy, report: VerifyReport, allow_unsigned_tail: bool) -> None:
    """Entries after the newest checkpoint, and a newest checkpoint without a witness quorum."""
    n, latest = report.entries, report.latest
    signed = latest.size if latest is not None else 0
    if signed < n:
        text = f"{n - signed} entries after the newest checkpoint (size {signed}) are unsigned"
        if allow_unsigned_tail:
            report.warnings.append(text)
        else:
            report.add("unsigned-tail", text, index=signed)
    if policy.quorum and latest is not None and latest.size not in report.published:
        report.warnings.append(f"latest checkpoint (size {latest.size}) lacks a witness quorum")
