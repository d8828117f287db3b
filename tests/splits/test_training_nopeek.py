"""NoPeek in split training: the client's objective gains α·dCor(X, h_A); nothing else changes on the wire."""
from __future__ import annotations

import torch
from splitref import padded_batch, positions

from defenses import make_defense
from defenses.nopeek import distance_correlation, real_rows
from splits import SplitRuntime, SplitSpec
from splits.multiclient import ClientBatchTrainer
from splits.training import LoraSpec, SequentialTrainer, adapter_state

STEPS = 6


def _run(tiny, defense, steps: int = STEPS, trainer=SequentialTrainer, clients: int = 1):
    rt = SplitRuntime(tiny, SplitSpec(1, 1), n_clients=clients, defense=defense)
    tr = trainer(rt, LoraSpec(rank=4, alpha=8), lr=2e-2)
    losses, terms = [], []
    for s in range(steps):
        batch = [dict(zip(("input_ids", "attention_mask"), padded_batch([12, 9], left=False, seed=100 + s + c)))
                 for c in range(clients)]
        losses.extend(tr.train_round(batch))
        terms.append(dict(tr.last_terms))
    adapters = {n: adapter_state(p) for n, p in rt.modules().items()}
    return rt, losses, terms, adapters


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k][n], b[k][n]) for k in a for n in a[k])


def test_weight_zero_is_the_plain_run_and_the_wire_is_unchanged(tiny):
    rt0, plain, _, ad0 = _run(tiny, None)
    rtz, zero, terms, adz = _run(tiny, make_defense("nopeek", weight=0.0))
    assert zero == plain and _same(ad0, adz)  # exactly, not approximately
    assert all(0 < t[0]["dcor"] <= 1 and t[0]["penalty"] == 0.0 for t in terms)  # dCor still logged
    rt1, pen, terms1, ad1 = _run(tiny, make_defense("nopeek", weight=1.0))
    assert pen[0] == terms1[0][0]["lm_loss"] + terms1[0][0]["penalty"]  # the recorded loss includes the penalty
    assert terms1[0][0]["lm_loss"] == plain[0] and pen[0] != plain[0]
    assert not _same(ad0, ad1)
    # nothing extra crosses the wire: same messages, same bytes as without a defense
    assert rt0.wire.stats() == rtz.wire.stats() == rt1.wire.stats()
    assert dict(rt0.wire.bytes_by) == dict(rt1.wire.bytes_by)


def test_penalty_lowers_dcor_on_held_out_text(tiny):
    """Seeded, tiny-llama, 20 steps: a large weight leaves a head whose h_A depends less on its inputs."""
    held, mask = padded_batch([16, 16, 16, 16], left=False, seed=99)

    def held_out_dcor(weight: float) -> float:
        rt, _, _, _ = _run(tiny, make_defense("nopeek", weight=weight), steps=20)
        head = rt.clients[0].head
        with torch.no_grad():
            xs, hs = real_rows(head.embed_tokens(held), head(held, mask, positions(mask), None), mask)
            return float(distance_correlation(xs, hs))

    plain, nopeek = held_out_dcor(0.0), held_out_dcor(10.0)
    assert nopeek < plain - 0.05, (plain, nopeek)


def test_client_batch_strategy_adds_each_clients_penalty(tiny):
    _, plain, _, ad0 = _run(tiny, None, steps=2, trainer=ClientBatchTrainer, clients=2)
    _, zero, _, adz = _run(tiny, make_defense("nopeek", weight=0.0), steps=2, trainer=ClientBatchTrainer, clients=2)
    _, pen, terms, _ = _run(tiny, make_defense("nopeek", weight=1.0), steps=2, trainer=ClientBatchTrainer, clients=2)
    assert zero == plain and _same(ad0, adz)
    assert set(terms[0]) == {0, 1} and all(pen[i] != plain[i] for i in range(2))
