"""Two cities on one machine: two federations, two CAs, nodes that recognise each other.

Shanghai's three district water offices and Suzhou's two, each city a
:class:`~datafed.local.federation.LocalFederation` with its own CA and trust domain
(docs/federation.md). :meth:`TwoCities.recognise` does what each city's operators do: it
writes each city's trust bundle and adds the other city's to every node's partners folder
(what ``datafed-node partners add`` does); :meth:`TwoCities.withdraw` removes it again.

Every node serves ``pipe_incidents`` under a policy that admits its own city's analyst and
the other city's by qualified name, with a ``partners`` section for the other city, over
a consortium of all five offices (exact data: a total is always over the whole basin).

>>> with TwoCities.create(Path("run")) as cities:        # doctest: +SKIP
...     cities.start(); cities.recognise()
...     Federation.from_file(cities.fed_toml("shanghai")).query(...)
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datafed import pki
from datafed.local import synth
from datafed.local.federation import LocalFederation, NodeSpec
from datafed.pki.trust import PartnerBundle

__all__ = ["CITIES", "PURPOSE", "SHARED_PURPOSE", "TwoCities", "city_specs"]

#: Each city's federation name and its water offices.
CITIES = {
    "shanghai": ("water-north", "water-east", "water-south"),
    "suzhou": ("water-wujiang", "water-kunshan"),
}
#: The purpose both cities admit (a river basin's pipe incidents).
SHARED_PURPOSE = "taihu-basin-planning"
#: A purpose each city keeps for its own analysts.
PURPOSE = "service-planning"
ANALYST = "alice"


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _policy(home: str, partner: str) -> str:
    members = ", ".join(f'"{c}:{n}"' for c, names in CITIES.items() for n in names)
    return (
        f'allowed_requesters = ["{home}:{ANALYST}", "{partner}:{ANALYST}"]\n'
        f'allowed_purposes = ["{PURPOSE}", "{SHARED_PURPOSE}"]\n'
        'allowed_aggregates = ["sum", "count", "avg"]\n'
        'allowed_protections = ["paillier", "plain"]\n'
        'allowed_operations = ["query", "intersection_sum"]\n'
        "min_group_size = 3\n"
        "person_level = false  # pipe incidents describe pipes, not persons\n"
        'identifier_columns = ["segment_id"]  # what an intersection may match on\n'
        f"consortium = [{members}]\n"
        "[datasets.policy.group_domains]\n"
        'material = ["cast_iron", "ductile_iron", "steel", "pvc"]\n'
        "year = [2022, 2023, 2024]\n"
        f"[datasets.policy.partners.{partner}]\n"
        f'allowed_purposes = ["{SHARED_PURPOSE}"]\n'
        'allowed_protections = ["paillier"]\n'
        'allowed_operations = ["query", "intersection_sum"]\n'
    )


#: Households with a water account in both cities (commuters): ``commuter_accounts`` on
#: the first office of each city, for a cross-city intersection-sum.
ACCOUNT_COLUMNS = (("person_id", "TEXT"), ("usage_m3", "REAL"))
#: ``usage_m3`` is bounded for DP: accounts describe persons.
USAGE_BOUND = 60.0
#: The epsilon the partner city's analysts may spend on ``commuter_accounts``, together.
PARTNER_EPSILON = 2.0


def commuter_accounts(city: str, seed: int = 7, people: int = 200) -> list[tuple[str, float]]:
    """Water accounts of ``city``; about half the people hold one in both cities."""
    rng = random.Random(f"{seed}:{city}:accounts")
    start = 0 if city == "shanghai" else people // 2
    return [
        (synth.person_id(i), round(rng.uniform(2.0, USAGE_BOUND), 1))
        for i in range(start, start + people)
    ]


def _accounts_policy(home: str, partner: str) -> str:
    return (
        f'allowed_requesters = ["{home}:{ANALYST}", "{partner}:{ANALYST}"]\n'
        f'allowed_purposes = ["{SHARED_PURPOSE}"]\n'
        'allowed_operations = ["intersection_sum"]\n'
        "min_group_size = 5\n"
        'identifier_columns = ["person_id"]\n'
        "[datasets.policy.dp]\n"
        "epsilon_per_query = 1.0\n"
        "budget_epsilon = 20.0\n"
        f"bounds = {{ usage_m3 = [0, {USAGE_BOUND}] }}\n"
        f"[datasets.policy.partners.{partner}]\n"
        f'allowed_purposes = ["{SHARED_PURPOSE}"]\n'
        'allowed_protections = ["paillier"]\n'
        'allowed_operations = ["intersection_sum"]\n'
        f"budget_epsilon = {PARTNER_EPSILON}  # inside the dataset's 20\n"
    )


def city_specs(city: str, seed: int = 7, segments: int = 60) -> list[NodeSpec]:
    """The water offices of ``city`` (a key of :data:`CITIES`) with their pipe incidents.

    The city's first office also holds ``commuter_accounts`` (:func:`commuter_accounts`).
    """
    partner = next(c for c in CITIES if c != city)
    out = []
    for i, name in enumerate(CITIES[city]):
        district = name.split("-", 1)[1]
        rows = synth.pipe_incidents(district, seed=seed + i, segments=segments)
        datasets: list[tuple[str, Sequence[tuple[str, str]], list[tuple[Any, ...]]]] = [
            ("pipe_incidents", synth.PIPE_COLUMNS, rows)
        ]
        if i == 0:
            accounts: list[tuple[Any, ...]] = list(commuter_accounts(city, seed))
            datasets.append(("commuter_accounts", ACCOUNT_COLUMNS, accounts))
        out.append(
            NodeSpec(
                name=name,
                agency=f"{city.title()} {district.title()} Water Office",
                datasets=datasets,
                policy_toml=_policy(city, partner),
                dataset_policies={"commuter_accounts": _accounts_policy(city, partner)},
            )
        )
    return out


@dataclass
class TwoCities:
    """Two local federations under ``root/<city>`` and their trust bundles."""

    root: Path
    cities: dict[str, LocalFederation]

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        segments: int = 60,
        progress: Callable[[str], None] = lambda _msg: None,
        witnesses: bool = False,
        publish_interval_s: float = 1.0,
    ) -> TwoCities:
        """Make both CAs, certificates, data and node configs (nothing recognised yet).

        With ``witnesses=True`` every node witnesses the *other* city's logs and asks the
        other city's nodes to cosign its own every ``publish_interval_s`` seconds (the
        nodes then listen on fixed free ports; recognise before starting them).
        """
        root = root.resolve()
        cities = {
            city: LocalFederation.create(
                root / city,
                city_specs(city, segments=segments),
                federation=city,
                progress=progress,
            )
            for city in CITIES
        }
        made = cls(root, cities)
        if witnesses:
            made._cross_witnessing(publish_interval_s)
        return made

    def _cross_witnessing(self, interval_s: float) -> None:
        """Fixed ports; ``[witness]`` and ``[publish]`` naming the other city's nodes."""
        ports = {
            fed.qname(n.spec.name): _free_port() for fed in self.cities.values() for n in fed.nodes
        }
        for city, fed in self.cities.items():
            other = next(o for c, o in self.cities.items() if c != city)
            certs = {
                other.qname(n.spec.name): pki.party_paths(other.pki_dir, "node", n.spec.name).cert
                for n in other.nodes
            }
            peers = ", ".join(f'"{c}"' for c in certs.values())
            for node in fed.nodes:
                text = node.config.read_text().replace(
                    'listen = "127.0.0.1:0"',
                    f'listen = "127.0.0.1:{ports[fed.qname(node.spec.name)]}"',
                )
                lines = ["", "[witness]", f"peers = [{peers}]", "", "[publish]"]
                lines.append(f"interval_s = {interval_s}")
                for name, cert in certs.items():
                    lines += ["", "[[publish.witnesses]]", f'name = "{name}"']
                    lines += [f'address = "127.0.0.1:{ports[name]}"', f'cert = "{cert}"']
                node.config.write_text(text + "\n".join(lines) + "\n")

    def bundle(self, city: str) -> Path:
        """Write ``city``'s trust bundle (what ``datafed pki bundle`` writes); return it."""
        fed = self.cities[city]
        ca = (fed.pki_dir / "ca.crt").read_bytes()
        path = self.root / "bundles" / f"{city}.bundle.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        crl = fed.pki_dir / "crl.pem"
        bundle = PartnerBundle(city, ca, crl if crl.exists() else None)
        path.write_text(bundle.to_json(), encoding="utf-8")
        return path

    def partners_dir(self, city: str, node: str) -> Path:
        """Where the node ``node`` of ``city`` keeps its partner bundles."""
        return self.cities[city].root / "nodes" / node / "state" / "partners"

    def recognise(self, city: str | None = None, partner: str | None = None) -> None:
        """Each city's nodes recognise the other (or only ``city``'s nodes ``partner``)."""
        pairs = [(c, p) for c in CITIES for p in CITIES if c != p]
        for home, other in pairs:
            if (city is None or home == city) and (partner is None or other == partner):
                bundle = PartnerBundle.read(self.bundle(other)).check(home)
                for name in CITIES[home]:
                    bundle.write(self.partners_dir(home, name))

    def withdraw(self, city: str, partner: str, nodes: tuple[str, ...] | None = None) -> None:
        """``city``'s nodes (or only ``nodes``) stop recognising ``partner``."""
        for name in nodes if nodes is not None else CITIES[city]:
            PartnerBundle.withdraw(self.partners_dir(city, name), partner)

    def start(self) -> None:
        """Start every node of both cities; write each city's analyst a two-city fed.toml."""
        for fed in self.cities.values():
            fed.start()
        self.write_fed_tomls()

    def write_fed_tomls(self) -> None:
        """Each city's analyst's fed.toml: home nodes, partner nodes and the partner bundle."""
        for city, fed in self.cities.items():
            fed.partner_bundles = [self.bundle(c) for c in CITIES if c != city]
            fed.partner_nodes = [
                (o.qname(n.spec.name), n.address)
                for c, o in self.cities.items()
                if c != city
                for n in o.nodes
            ]
            fed.write_fed_toml()

    def fed_toml(self, city: str) -> Path:
        """The fed.toml of ``city``'s analyst (both cities' nodes)."""
        return self.cities[city].fed_toml

    def stop(self) -> None:
        """Stop every node of both cities."""
        for fed in self.cities.values():
            fed.stop()

    def __enter__(self) -> TwoCities:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
