"""Protection modes (DESIGN §3): one class per mode, each with its node and client side."""

from datafed.query.modes._base import ModeContext, NodeEnv, ProtectionMode
from datafed.query.modes._paillier import PaillierMode, check_paillier_modulus
from datafed.query.modes._plain import PlainMode

__all__ = [
    "MODES",
    "ModeContext",
    "NodeEnv",
    "PaillierMode",
    "PlainMode",
    "ProtectionMode",
    "check_paillier_modulus",
    "mode_class",
]

#: Every registered mode by wire name.
MODES: dict[str, type[ProtectionMode]] = {m.name: m for m in (PlainMode, PaillierMode)}


def mode_class(name: str) -> type[ProtectionMode]:
    """Return the mode called ``name`` or raise ValueError listing the known ones."""
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(
            f"unknown protection mode {name!r}: expected one of {sorted(MODES)}"
        ) from None
