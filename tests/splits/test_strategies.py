"""Training strategies on tiny-llama: each equals sequential with one client; client-batch equals one step
on the concatenated batch; server-hierarchical trains independent sub-server pairs and a sync is the
example-weighted average of the parts. Every message crosses the wire with the usual byte counts."""
from __future__ import annotations

import zlib

import pytest
import torch
from splitref import padded_batch

from splits import SplitRuntime, SplitSpec
from splits.multiclient import ClientBatchTrainer, HierarchicalTrainer
from splits.strategies import strategies
from splits.training import LoraSpec, SequentialTrainer, adapter_state, causal_lm_loss, global_name, labels_for

LORA = LoraSpec(rank=2, alpha=4)
LR = 1e-2
TOL = 1e-5


def perturb(rt: SplitRuntime) -> None:
    """peft initialises lora_B to zero; make every lora_B non-zero so every adapter gets a gradient, with
    the same values for the same blocks on every client and sub-server (seeded by the global name)."""
    for part in rt.modules().values():
        for n, p in part.named_parameters():
            if "lora_B" in n:
                g = torch.Generator().manual_seed(zlib.crc32(global_name(part.role, part.first_block, n).encode()))
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def make(tiny, cls, n_clients=1, **kw):
    rt = SplitRuntime(tiny, SplitSpec(1, 1), n_clients=n_clients)
    trainer = cls(rt, LORA, lr=LR, **kw)
    perturb(rt)
    return rt, trainer


def batch(lengths, seed, left=False) -> dict:
    ids, mask = padded_batch(lengths, left=left, seed=seed)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels_for(ids, mask)}


def states(rt: SplitRuntime) -> dict:
    return {name: adapter_state(part) for name, part in rt.modules().items()}


def assert_same(a: dict, b: dict, tol=TOL) -> None:
    assert a.keys() == b.keys()
    for part in a:
        assert a[part].keys() == b[part].keys() and a[part], part
        for n in a[part]:
            assert torch.allclose(a[part][n], b[part][n], atol=tol), (part, n, float((a[part][n] - b[part][n]).abs().max()))


def test_the_registry_names_three_strategies():
    assert strategies.names() == ["client-batch", "sequential", "server-hierarchical"]
    assert strategies.get("server-hierarchical").trainer() is HierarchicalTrainer
    assert strategies.get("client-batch").trainer() is ClientBatchTrainer
    assert strategies.get("sequential").trainer() is SequentialTrainer
    assert [s.options for _, s in strategies.items()] == [(), (), ("sync_every",)]


@pytest.mark.parametrize("cls,kw", [(ClientBatchTrainer, {}), (HierarchicalTrainer, {"sync_every": 1}),
                                    (HierarchicalTrainer, {"sync_every": 2})])
def test_one_client_equals_sequential(tiny, cls, kw):
    rounds = [batch([9, 5, 12], seed=1), batch([4, 7], seed=2, left=True), batch([6, 6, 3], seed=3)]
    rt_s, seq = make(tiny, SequentialTrainer)
    rt_x, other = make(tiny, cls, **kw)
    losses_s = [x for b in rounds for x in seq.train_round([b])]
    losses_x = [x for b in rounds for x in other.train_round([b])]
    other.finish()
    assert losses_x == pytest.approx(losses_s, abs=TOL)
    assert_same(states(rt_x), states(rt_s))
    assert rt_x.wire.bytes_by == rt_s.wire.bytes_by  # the same messages, byte for byte counted


def test_client_batch_equals_one_step_on_the_concatenated_batch(tiny):
    """Trunk: one sequential step of one client holding the concatenated batch, whose loss is the sum of the
    clients' losses (each a mean over that client's rows), equals the client-batch step. Client c's head and
    tail: the gradient of its own loss only, i.e. a step of client c alone on its own batch."""
    client_batches = [batch([9, 5], seed=11), batch([4], seed=12), batch([12, 2, 7], seed=13)]
    rt, cb = make(tiny, ClientBatchTrainer, n_clients=3)
    init = states(rt)
    losses = cb.train_round(client_batches)
    got = states(rt)

    # the trunk's reference: the concatenated batch through one client (all clients start from the same head)
    rt_ref, ref = make(tiny, SequentialTrainer)
    rows = [b["input_ids"].shape[0] for b in client_batches]
    width = max(b["input_ids"].shape[1] for b in client_batches)
    pad = lambda t, v: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=v)  # right padding
    ids = torch.cat([pad(b["input_ids"], 0) for b in client_batches])
    mask = torch.cat([pad(b["attention_mask"], 0) for b in client_batches])
    labels = torch.cat([pad(b["labels"], -100) for b in client_batches])
    logits, template = rt_ref.train_forward(ids, mask)
    per_client = [causal_lm_loss(lg, lb) for lg, lb in zip(logits.split(rows), labels.split(rows))]
    sum(per_client).backward()
    rt_ref.backward(0, template)
    for opt in ref.optimizers.values():
        opt.step()
    assert losses == pytest.approx([float(x.detach()) for x in per_client], abs=TOL)
    assert_same({"trunk": got["trunk"]}, {"trunk": states(rt_ref)["trunk"]})
    assert all(not torch.equal(t, init["trunk"][n]) for n, t in got["trunk"].items()), "an adapter did not move"

    # each client's parts: a step of that client alone
    for c, b in enumerate(client_batches):
        rt_c, solo = make(tiny, SequentialTrainer)
        assert solo.train_round([b]) == pytest.approx([losses[c]], abs=TOL)
        want = states(rt_c)
        assert_same({p: got[f"client{c}.{p}"] for p in ("head", "tail")}, {p: want[f"client0.{p}"] for p in ("head", "tail")})

    # every client's messages crossed the wire on its own link, with the usual sizes
    d = tiny.model.config.hidden_size
    per_kind = sum(32 + 4 * b["input_ids"].shape[0] + int(b["attention_mask"].sum()) * d * 4 for b in client_batches)
    for kind, direction in (("HIDDEN_A", "client->server"), ("HIDDEN_B", "server->client"),
                            ("GRAD_B", "client->server"), ("GRAD_A", "server->client")):
        assert rt.wire.bytes_by[(direction, kind, "TRAIN")] == per_kind
        assert rt.wire.messages_by[(direction, kind, "TRAIN")] == 3


def test_client_batch_steps_the_trunk_once_per_round(tiny):
    """Two rounds of client-batch with K clients equal two steps of the summed objective: the trunk's AdamW
    has taken exactly two steps."""
    _rt, cb = make(tiny, ClientBatchTrainer, n_clients=2)
    for s in range(2):
        cb.train_round([batch([5, 3], seed=20 + s), batch([6], seed=30 + s)])
    opt = cb.optimizers["server"]
    assert all(int(st["step"]) == 2 for st in opt.state.values())
    assert all(int(st["step"]) == 2 for st in cb.optimizers["client1"].state.values())


def test_server_hierarchical_trains_independent_pairs_and_syncs_to_the_weighted_average(tiny):
    weights = (5, 1, 2)
    data = [[batch([7, 4], seed=40 + c), batch([3, 8], seed=50 + c)] for c in range(3)]
    rt, hier = make(tiny, HierarchicalTrainer, n_clients=3, sync_every=2, client_examples=weights)
    assert [s.clients for s in rt.servers] == [(0,), (1,), (2,)]
    assert rt.servers[0].trunk is not rt.servers[1].trunk
    for r in range(2):
        hier.local_round([data[c][r] for c in range(3)])
    before = states(rt)

    # between syncs each client trains with its own sub-server, exactly as one client alone would
    for c in range(3):
        rt_c, solo = make(tiny, SequentialTrainer)
        for r in range(2):
            solo.train_round([data[c][r]])
        want = states(rt_c)
        assert_same({"trunk": before[f"server{c}.trunk"], "head": before[f"client{c}.head"]},
                    {"trunk": want["trunk"], "head": want["client0.head"]})
    assert not torch.equal(*[before[f"server{c}.trunk"]["layers.0.self_attn.q_proj.lora_A.default.weight"]
                             for c in (0, 1)])

    hier.sync()
    after = states(rt)
    w = torch.tensor(weights, dtype=torch.float32) / sum(weights)
    for role, names in (("trunk", [f"server{c}.trunk" for c in range(3)]), ("head", [f"client{c}.head" for c in range(3)]),
                        ("tail", [f"client{c}.tail" for c in range(3)])):
        for n in before[names[0]]:
            avg = sum(float(w[c]) * before[names[c]][n] for c in range(3))
            for name in names:
                assert torch.allclose(after[name][n], avg, atol=1e-7), (role, n)
                assert torch.equal(after[name][n], after[names[0]][n])  # redistributed: identical copies
    desc = hier.describe()
    assert desc["syncs"] == 1 and desc["fedavg_weights"] == pytest.approx([5 / 8, 1 / 8, 2 / 8])
    n_adapter = sum(t.numel() * 4 for t in after["client0.head"].values()) + sum(
        t.numel() * 4 for t in after["client0.tail"].values())
    assert desc["aggregation_bytes"]["clients"] == 2 * 3 * n_adapter  # up and down, every client


def test_server_hierarchical_syncs_every_n_rounds_and_at_the_end(tiny):
    rt, hier = make(tiny, HierarchicalTrainer, n_clients=2, sync_every=2)
    name = "layers.0.self_attn.q_proj.lora_A.default.weight"

    def trunks_equal() -> bool:
        return torch.equal(*[adapter_state(s.trunk)[name] for s in rt.servers])

    for r, synced in enumerate([False, True, False]):
        hier.train_round([batch([6, 3], seed=60 + r), batch([5, 5], seed=70 + r)])
        assert trunks_equal() == synced, f"round {r + 1}"
    hier.finish()
    assert trunks_equal() and hier.describe()["syncs"] == 2
    assert set(rt.checkpoint_modules()) == {"trunk", "client0.head", "client0.tail", "client1.head", "client1.tail"}
    assert rt.checkpoint_modules()["trunk"] is rt.servers[0].trunk
    # every round's four messages per client crossed the wire
    assert rt.wire.messages_by[("client->server", "HIDDEN_A", "TRAIN")] == 6


def test_client_batch_rejects_an_incomplete_batch_of_gradients(tiny):
    from flbench.core.errors import WireError

    rt, _trainer = make(tiny, ClientBatchTrainer, n_clients=2)
    b = [batch([5, 3], seed=1), batch([4], seed=2)]
    logits = rt.train_forward_batch([(c, x["input_ids"], x["attention_mask"]) for c, x in enumerate(b)])
    for lg, x in zip(logits, b):
        causal_lm_loss(lg, x["labels"]).backward()
    grad0 = rt.wire.transmit(rt.clients[0].send_grad())
    with pytest.raises(WireError, match="do not complete one client batch"):
        rt.server.backward_batch([grad0])
    with pytest.raises(WireError, match="its gradient goes with the batch"):
        rt.server.backward(grad0)


def test_client_batch_trunk_runs_packed_without_padding(tiny):
    """The server packs the clients' real tokens into one row (each sample attending only to itself: the
    equality tests above), so the trunk's forward computes exactly the real tokens, no padded slot."""
    client_batches = [batch([9, 5], seed=21), batch([3], seed=22, left=True)]
    rt, cb = make(tiny, ClientBatchTrainer, n_clients=2)
    seen = []
    hook = rt.server.trunk.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape)))
    cb.train_round(client_batches)
    hook.remove()
    real = sum(int(b["attention_mask"].sum()) for b in client_batches)
    assert seen == [(1, real, tiny.model.config.hidden_size)]
