"""One split training step (LoRA per part, gradients over the wire) equals the same step on the unsplit
model carrying the same adapters: same loss, same updated parameters (within 1e-5)."""
from __future__ import annotations

import pytest
import torch
from splitref import padded_batch, positions

from splits import SplitRuntime, SplitSpec
from splits.training import (LoraSpec, SequentialTrainer, adapter_state, causal_lm_loss, centralized_twin,
                             global_name, labels_for)


def _perturb_lora_b(rt: SplitRuntime, seed: int = 1) -> None:
    """peft initialises lora_B to zero; make it non-zero so every adapter gets a gradient."""
    g = torch.Generator().manual_seed(seed)
    for part in rt.modules().values():
        for n, p in part.named_parameters():
            if "lora_B" in n:
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize("p,q,parts,left", [
    (1, 1, ("head", "trunk", "tail"), False),
    (0, 2, ("trunk", "tail"), True),
    (2, 1, ("head", "tail"), False),
    (1, 0, ("head", "trunk"), True),
])
def test_split_step_equals_centralized_step(tiny, p, q, parts, left):
    rt = SplitRuntime(tiny, SplitSpec(p, q))
    lora = LoraSpec(rank=4, alpha=8, parts=parts)
    trainer = SequentialTrainer(rt, lora, lr=1e-2)
    _perturb_lora_b(rt)
    twin = centralized_twin(rt, lora)
    twin.train()
    opt = torch.optim.AdamW([t for t in twin.parameters() if t.requires_grad], lr=1e-2, weight_decay=0.0)
    ids, mask = padded_batch([9, 5, 12], left=left, seed=3)
    before = {name: adapter_state(part) for name, part in rt.modules().items()}

    loss_c = causal_lm_loss(twin(ids, attention_mask=mask, position_ids=positions(mask)).logits, labels_for(ids, mask))
    loss_c.backward()
    opt.step()
    loss_s = trainer.step(ids, mask)

    assert abs(loss_s - float(loss_c.detach())) <= 1e-5
    ref = dict(twin.named_parameters())
    moved = 0
    for name, part in rt.modules().items():
        for n, t in adapter_state(part).items():
            assert torch.allclose(t, ref[global_name(part.role, part.first_block, n)], atol=1e-5), (name, n)
            moved += int(not torch.equal(t, before[name][n]))
    assert moved > 0, "the step updated no adapter"
    # untrained parts hold no adapters at all
    for name, part in rt.modules().items():
        assert bool(adapter_state(part)) == (part.role in parts and part.n_blocks > 0)


def test_gradients_cross_the_wire_with_exact_sizes(tiny):
    rt = SplitRuntime(tiny, SplitSpec(1, 1))
    trainer = SequentialTrainer(rt, LoraSpec(rank=2, alpha=4))
    ids, mask = padded_batch([7, 3], left=False)
    trainer.step(ids, mask)
    n_real, b, d = int(mask.sum()), 2, tiny.model.config.hidden_size
    per_msg = 32 + 4 * b + n_real * d * 4
    for kind in ("HIDDEN_A", "HIDDEN_B", "GRAD_B", "GRAD_A"):
        direction = "client->server" if kind in ("HIDDEN_A", "GRAD_B") else "server->client"
        assert rt.wire.bytes_by[(direction, kind, "TRAIN")] == per_msg


def test_clients_take_turns_and_keep_their_own_adapters(tiny):
    rt = SplitRuntime(tiny, SplitSpec(1, 1), n_clients=2)
    trainer = SequentialTrainer(rt, LoraSpec(rank=2, alpha=4, parts=("head", "tail")), lr=1e-2)
    ids, mask = padded_batch([6, 6], left=False, seed=5)
    h0 = adapter_state(rt.clients[0].head)
    h1 = adapter_state(rt.clients[1].head)
    assert all(torch.equal(h0[k], h1[k]) for k in h0)  # same seeded init on every client
    trainer.step(ids, mask, client=0)
    after0, after1 = adapter_state(rt.clients[0].head), adapter_state(rt.clients[1].head)
    assert any(not torch.equal(h0[k], after0[k]) for k in h0)
    assert all(torch.equal(h1[k], after1[k]) for k in h1), "client 1 must not move on client 0's step"


def test_training_reduces_loss(tiny):
    rt = SplitRuntime(tiny, SplitSpec(1, 1))
    trainer = SequentialTrainer(rt, LoraSpec(rank=4, alpha=8), lr=2e-2)
    ids, mask = padded_batch([16, 16], left=False, seed=7)
    losses = [trainer.step(ids, mask) for _ in range(15)]
    assert losses[-1] < losses[0] - 0.5
