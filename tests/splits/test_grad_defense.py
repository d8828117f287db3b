"""The defense on the client's gradient edge: the tail applies it to dL/dh_B (B, T, d), padded rows zero, with
its own generator, before the GRAD_B is sent; the server sees and backpropagates the defended gradient, h_A is
untouched; a defense is refused on an edge it does not declare."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from defenses import make_defense, make_generator
from flbench.core.errors import FlbenchError
from splits import SplitRuntime, SplitSpec
from splits.training import LoraSpec, SequentialTrainer
from splits.wire import Kind, RecordingTap

IDS = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


@dataclass
class Spy:
    """A gradient-edge defense that records what it is given and adds a constant to the real rows."""

    edges = ("grad_b",)
    family = "test"
    name = "spy"
    seen: list = None

    def __call__(self, g, generator):
        self.seen = (self.seen or []) + [(g.clone(), generator)]
        return g + 1.0


def _step(tiny, **kw):
    rt = SplitRuntime(tiny, SplitSpec(1, 1), **kw)
    tap = RecordingTap()
    rt.wire.taps.append(tap)
    SequentialTrainer(rt, LoraSpec(), lr=1e-2, seed=0).step(IDS, MASK)
    got = {k: [m.tensor for m in tap.received + tap.sent if m.kind == k] for k in Kind}
    return rt, got


def test_grad_defense_changes_grad_b_not_h_a(tiny):
    h_a = dict(defense=make_defense("gaussian", sigma=0.1), generator=make_generator(seed=1))
    _, plain = _step(tiny, **h_a)
    h_a = dict(defense=make_defense("gaussian", sigma=0.1), generator=make_generator(seed=1))
    rt, dp = _step(tiny, **h_a, grad_defense=make_defense("grad-dp", clip=0.01, noise_multiplier=1.0),
                   grad_generator=make_generator(seed=2))
    # the forward edge is bit-identical (the gradient defense draws from its own generator)
    assert all(torch.equal(a, b) for a, b in zip(plain[Kind.HIDDEN_A], dp[Kind.HIDDEN_A]))
    assert all(torch.equal(a, b) for a, b in zip(plain[Kind.HIDDEN_B], dp[Kind.HIDDEN_B]))
    # the server receives, and backpropagates, the defended gradient
    (g0,), (g1,) = plain[Kind.GRAD_B], dp[Kind.GRAD_B]
    assert g0.shape == g1.shape == (8, 64) and not torch.allclose(g0, g1)
    assert not torch.allclose(plain[Kind.GRAD_A][0], dp[Kind.GRAD_A][0])
    assert rt.clients[0].grad_defense.stats()["calls"] == 1


def test_grad_defense_sees_the_padded_batch_with_zero_padding(tiny):
    spy = Spy()
    gen = make_generator(seed=3)
    _, got = _step(tiny, grad_defense=spy, grad_generator=gen)
    (g, generator), = spy.seen
    assert g.shape == (2, 5, 64) and generator is gen
    assert torch.all(g[1, 3:] == 0)  # padding
    assert torch.all(g[0, :4].norm(dim=-1) > 0) and torch.all(g[0, 4] == 0)  # the last token predicts nothing
    # what crosses the wire is the defense's output on the real rows
    (sent,) = got[Kind.GRAD_B]
    assert torch.allclose(sent, torch.cat([g[0], g[1, :3]]) + 1.0)


def test_no_grad_defense_sends_the_gradient_as_before(tiny):
    _, a = _step(tiny)
    _, b = _step(tiny, grad_defense=None)
    assert torch.equal(a[Kind.GRAD_B][0], b[Kind.GRAD_B][0])
    _, c = _step(tiny, grad_defense=make_defense("none"))  # "none" fits every edge and changes nothing
    assert torch.equal(a[Kind.GRAD_B][0], c[Kind.GRAD_B][0])


def test_a_defense_is_refused_on_an_edge_it_does_not_declare(tiny):
    with pytest.raises(FlbenchError, match=r"^defense 'gaussian' cannot sit on the tail's gradient dL/dh_B "
                                           r"\(--grad-defense\): it declares edges h_a"):
        SplitRuntime(tiny, SplitSpec(1, 1), grad_defense=make_defense("gaussian", sigma=1.0))
    with pytest.raises(FlbenchError, match=r"^defense 'grad-dp' cannot sit on the head's hidden states h_A"):
        SplitRuntime(tiny, SplitSpec(1, 1), defense=make_defense("grad-dp", clip=1.0, noise_multiplier=1.0))
