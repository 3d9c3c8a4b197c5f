"""Protection modes (DESIGN §3): one class per mode, each with its node and client side."""

from datafed.query.modes._base import ModeContext, NodeEnv, ProtectionMode
from datafed.query.modes._ckks import CkksMode
from datafed.query.modes._paillier import PaillierMode, check_paillier_modulus
from datafed.query.modes._plain import PlainMode
from datafed.query.modes._secagg import SecAggMode
from datafed.query.modes._shares import SharesMode
from datafed.query.modes._steps import Combined, JobStash, NodeAnswer, StepSession

__all__ = [
    "MODES",
    "CkksMode",
    "Combined",
    "JobStash",
    "ModeContext",
    "NodeAnswer",
    "NodeEnv",
    "PaillierMode",
    "PlainMode",
    "ProtectionMode",
    "SecAggMode",
    "SharesMode",
    "StepSession",
    "check_paillier_modulus",
    "mode_class",
]

#: Every registered mode by wire name.
MODES: dict[str, type[ProtectionMode]] = {
    m.name: m for m in (PlainMode, PaillierMode, SharesMode, SecAggMode, CkksMode)
}


def mode_class(name: str) -> type[ProtectionMode]:
    """Return the mode called ``name`` or raise ValueError listing the known ones."""
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(
            f"unknown protection mode {name!r}: expected one of {sorted(MODES)}"
        ) from None
