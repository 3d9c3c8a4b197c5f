from __future__ import annotations

import numpy as np
import pytest

from datafed.hazmat import decode_fixed, encode_fixed
from datafed.protocols import (
    ForwardedShares,
    InvalidMessage,
    ProtocolAbort,
    RoundError,
    SecAggClient,
    SecAggServer,
    Survivors,
)

N, T, L = 10, 6, 64


def _inputs() -> dict[int, np.ndarray]:
    rng = np.random.default_rng(5)
    return {i: rng.integers(0, 2**64, L, dtype=np.uint64) for i in range(1, N + 1)}


def run(drops: dict[int, set[int]]) -> tuple[np.ndarray, set[int], SecAggServer, dict]:
    """Run the protocol; ``drops[r]`` are the clients that vanish before round ``r``."""
    clients = {i: SecAggClient(i, threshold=T, vector_length=L) for i in range(1, N + 1)}
    xs = _inputs()
    server = SecAggServer(threshold=T, vector_length=L)
    alive = set(clients)
    seen: dict[str, list] = {"masked": []}

    def live(r: int) -> list[int]:
        alive.difference_update(drops.get(r, set()))
        return sorted(alive)

    for i in live(0):
        server.receive_advertise(clients[i].advertise_keys())
    roster = server.roster()
    for i in live(1):
        server.receive_shares(clients[i].share_keys(roster))
    forwarded = server.forward()
    for i in live(2):
        msg = clients[i].masked_input(forwarded[i], xs[i])
        seen["masked"].append(msg)
        server.receive_masked(msg)
    survivors = server.survivors()
    signers = [i for i in live(3) if clients[i].consistency(survivors)]
    for i in live(4):
        if i in signers:
            server.receive_unmask(clients[i].unmask(survivors, signers))
    return server.result(), set(survivors.clients), server, {"xs": xs, **seen}


def _expected(xs: dict[int, np.ndarray], ids: set[int]) -> np.ndarray:
    total = np.zeros(L, dtype=np.uint64)
    for i in ids:
        total += xs[i]
    return total


@pytest.mark.parametrize("round_", [None, 0, 1, 2, 3, 4])
def test_exact_sum_with_dropouts_at_each_round(round_: int | None) -> None:
    drops = {} if round_ is None else {round_: {2, 5, 9, 10}}  # n - t = 4 dropouts
    result, survivors, _, seen = run(drops)
    if round_ in (0, 1, 2):
        assert survivors == set(range(1, N + 1)) - {2, 5, 9, 10}
    else:
        assert survivors == set(range(1, N + 1))
    assert np.array_equal(result, _expected(seen["xs"], survivors))


def test_dropouts_spread_over_rounds() -> None:
    result, survivors, _, seen = run({1: {3}, 2: {4}, 3: {7, 8}})
    assert survivors == set(range(1, N + 1)) - {3, 4}
    assert np.array_equal(result, _expected(seen["xs"], survivors))


def test_too_many_dropouts_abort() -> None:
    with pytest.raises(ProtocolAbort):
        run({2: {1, 2, 3, 4, 5}})


def test_fixed_point_sum() -> None:
    clients = [SecAggClient(i, threshold=2, vector_length=3) for i in (1, 2, 3)]
    server = SecAggServer(threshold=2, vector_length=3)
    for c in clients:
        server.receive_advertise(c.advertise_keys())
    roster = server.roster()
    for c in clients:
        server.receive_shares(c.share_keys(roster))
    fwd = server.forward()
    for k, c in enumerate(clients):
        server.receive_masked(c.masked_input(fwd[c.client_id], encode_fixed([k, -1.5, 0.25])))
    surv = server.survivors()
    for c in clients:
        c.consistency(surv)
    for c in clients:
        server.receive_unmask(c.unmask(surv, surv.clients))
    assert decode_fixed(server.result()).tolist() == [3.0, -4.5, 0.75]


def test_server_view_of_an_input_is_masked() -> None:
    _, _, _, seen = run({})
    xs = seen["xs"]
    for msg in seen["masked"]:
        y = np.frombuffer(msg.masked, dtype="<u8")
        assert not np.array_equal(y, xs[msg.sender])
        # y - x is the client's total mask: uniform-looking bits, independent of x
        mask_bits = np.unpackbits((y - xs[msg.sender]).view(np.uint8))
        assert abs(mask_bits.mean() - 0.5) < 0.06
    zero_client = SecAggClient(1, threshold=2, vector_length=L)
    other = SecAggClient(2, threshold=2, vector_length=L)
    third = SecAggClient(3, threshold=2, vector_length=L)
    server = SecAggServer(threshold=2, vector_length=L)
    for c in (zero_client, other, third):
        server.receive_advertise(c.advertise_keys())
    roster = server.roster()
    for c in (zero_client, other, third):
        server.receive_shares(c.share_keys(roster))
    fwd = server.forward()
    y = zero_client.masked_input(fwd[1], np.zeros(L, dtype=np.uint64))
    assert (
        np.count_nonzero(np.frombuffer(y.masked, dtype="<u8")) >= L - 1
    )  # an all-zero input is hidden


def test_client_refuses_to_unmask_a_survivor_twice() -> None:
    clients, _ = _masked(4, 3)
    # a server that lies about U3 (a client it never heard in round 1) is refused
    with pytest.raises(InvalidMessage):
        clients[1].consistency(Survivors((1, 2, 3, 99)))
    # shares are never released twice
    clients[2].consistency(Survivors((1, 2, 3)))
    shares = clients[2].unmask(Survivors((1, 2, 3)), (1, 2, 3))
    assert {v for v, _ in shares.self_mask_shares} == {1, 2, 3}
    assert {v for v, _ in shares.key_shares} == {4}
    with pytest.raises(RoundError):
        clients[2].unmask(Survivors((1, 2, 3, 4)), (1, 2, 3, 4))


def _masked(n: int, t: int) -> tuple[dict[int, SecAggClient], SecAggServer]:
    clients = {i: SecAggClient(i, threshold=t, vector_length=4) for i in range(1, n + 1)}
    server = SecAggServer(threshold=t, vector_length=4)
    for c in clients.values():
        server.receive_advertise(c.advertise_keys())
    roster = server.roster()
    for c in clients.values():
        server.receive_shares(c.share_keys(roster))
    fwd = server.forward()
    for i, c in clients.items():
        server.receive_masked(c.masked_input(fwd[i], np.full(4, i, dtype=np.uint64)))
    return clients, server


def test_a_client_unmasks_only_the_survivor_set_it_was_shown_with_t_signers() -> None:
    clients, _ = _masked(5, 3)
    u3 = Survivors((1, 2, 3, 4, 5))
    msg = clients[1].consistency(u3)
    assert msg == clients[2].consistency(Survivors((5, 4, 3, 2, 1)))  # order-free
    assert msg != clients[3].consistency(Survivors((1, 2, 3, 4)))
    # shown U3 in round 3, asked to unmask for another set: refused
    with pytest.raises(InvalidMessage):
        clients[3].unmask(u3, (1, 2, 3))
    # fewer than t signers, or signers outside U3: refused
    with pytest.raises(ProtocolAbort, match="only 2 clients vouched"):
        clients[1].unmask(u3, (1, 2))
    with pytest.raises(InvalidMessage):
        clients[2].unmask(u3, (1, 2, 6))


def test_a_server_telling_two_stories_cannot_unmask_one_input() -> None:
    """The attack the consistency round stops (Bonawitz et al. 2017, active variant).

    The server tells some clients that client 5 survived (to collect its self-mask
    shares) and others that it dropped (to collect its mask-key shares): with both it
    could remove 5's masks alone.  Every client sees U3 once, so the two stories need two
    disjoint groups of at least t signers, and 2t > n leaves too few clients.
    """
    clients, _ = _masked(5, 3)
    with_5, without_5 = Survivors((1, 2, 3, 4, 5)), Survivors((1, 2, 3, 4))
    signed_with = {i for i in (1, 2, 3) if clients[i].consistency(with_5)}
    signed_without = {i for i in (4,) if clients[i].consistency(without_5)}
    # client 3 already signed one story: it cannot sign the other
    with pytest.raises(RoundError):
        clients[3].consistency(without_5)
    assert len(signed_without) < 3  # too few vouch for the second story
    with pytest.raises(ProtocolAbort):
        clients[4].unmask(without_5, signed_without | {1, 2} - signed_with)
    # the first story alone releases 5's self-mask shares, never its mask-key shares
    shares = clients[1].unmask(with_5, signed_with)
    assert 5 in {v for v, _ in shares.self_mask_shares}
    assert 5 not in {v for v, _ in shares.key_shares}


def _round1(n: int) -> tuple[dict[int, SecAggClient], dict[int, ForwardedShares]]:
    clients = {i: SecAggClient(i, threshold=2, vector_length=2) for i in range(1, n + 1)}
    server = SecAggServer(threshold=2, vector_length=2)
    for c in clients.values():
        server.receive_advertise(c.advertise_keys())
    roster = server.roster()
    for c in clients.values():
        server.receive_shares(c.share_keys(roster))
    return clients, server.forward()


def test_tampered_share_ciphertext_rejected() -> None:
    clients, fwd = _round1(3)
    (sender, sealed), *rest = fwd[1].ciphertexts
    bad = ForwardedShares(1, ((sender, sealed[:-1] + bytes([sealed[-1] ^ 1])), *rest))
    with pytest.raises(InvalidMessage):
        clients[1].masked_input(bad, np.zeros(2, dtype=np.uint64))


def test_swapped_senders_rejected() -> None:
    clients, fwd = _round1(3)
    swapped = ForwardedShares(1, tuple((5 - s, ct) for s, ct in fwd[1].ciphertexts))
    with pytest.raises(InvalidMessage):
        clients[1].masked_input(swapped, np.zeros(2, dtype=np.uint64))


def test_round_order_and_parameters() -> None:
    client = SecAggClient(1, threshold=2, vector_length=2)
    with pytest.raises(RoundError):
        client.consistency(Survivors((1,)))
    with pytest.raises(RoundError):
        client.unmask(Survivors((1,)), (1,))
    server = SecAggServer(threshold=2, vector_length=2)
    with pytest.raises(RoundError):
        server.result()
    with pytest.raises(ValueError, match="threshold must be at least 2"):
        SecAggServer(threshold=1, vector_length=2)
    with pytest.raises(ValueError, match="client_id"):
        SecAggClient(0, threshold=2, vector_length=2)
    server.receive_advertise(client.advertise_keys())
    with pytest.raises(InvalidMessage):  # a second client claiming id 1
        server.receive_advertise(SecAggClient(1, threshold=2, vector_length=2).advertise_keys())
    with pytest.raises(ProtocolAbort):
        server.roster()
