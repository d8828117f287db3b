"""Several clients on one server: each client's results match the centralized model, the server keeps their
states apart, and wire taps record exactly what the server received (the attacker's view)."""
from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splits import SplitRuntime, SplitSpec
from splits.inference import split_generate
from splits.wire import Kind, Phase, RecordingTap
from splitref import centralized_hidden, centralized_logits, hf_greedy, max_diff_at_real, padded_batch

TOL = 1e-4


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    p=st.integers(0, 3),
    q_frac=st.floats(0, 1),
    lengths=st.lists(st.lists(st.integers(1, 12), min_size=1, max_size=3), min_size=2, max_size=2),
    left=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_two_clients_forward_and_taps(tiny, p, q_frac, lengths, left, seed):
    n = tiny.model.config.num_hidden_layers
    q = int(q_frac * (n - 1 - p))
    rt = SplitRuntime(tiny, SplitSpec(p, q), n_clients=2)
    tap = RecordingTap()
    rt.wire.taps.append(tap)
    batches = [padded_batch(ls, left, seed=seed + c) for c, ls in enumerate(lengths)]
    with torch.no_grad():
        outs = [rt.forward(ids, mask, client=c) for c, (ids, mask) in enumerate(batches)]
    assert [m.kind for m in tap.received] == [Kind.HIDDEN_A, Kind.HIDDEN_A]
    assert [m.kind for m in tap.sent] == [Kind.HIDDEN_B, Kind.HIDDEN_B]
    for c, ((ids, mask), out) in enumerate(zip(batches, outs)):
        ref = centralized_logits(tiny.model, ids, mask)
        assert max_diff_at_real(out, ref, mask) <= TOL, f"client {c}"
        hs = centralized_hidden(tiny.model, ids, mask)
        got_a, got_b = tap.received[c], tap.sent[c]
        assert got_a.client == got_b.client == c
        assert got_a.phase == Phase.EVAL and got_a.left_pad == (left or bool((mask == 1).all()))
        assert got_a.ints.tolist() == mask.sum(-1).tolist() and got_a.seqlen == ids.shape[1]
        # HIDDEN_A = head output (after blocks 0..p-1) at the real tokens only, sample-major
        want_a = hs[p][mask.bool()]
        assert got_a.tensor.shape == want_a.shape == (int(mask.sum()), tiny.model.config.hidden_size)
        assert float((got_a.tensor - want_a).abs().max()) <= 1e-5
        # HIDDEN_B = trunk output (after blocks 0..n-q-1); hidden_states[n] is post-norm, so only for q > 0
        if q > 0:
            assert float((got_b.tensor - hs[n - q][mask.bool()]).abs().max()) <= 1e-5


def test_two_clients_interleaved_kv_generation(tiny):
    """Prefill both clients, then alternate decode steps: per-client caches on the server must not mix."""
    rt = SplitRuntime(tiny, SplitSpec(1, 1), n_clients=2)
    model = tiny.model
    batches = [padded_batch([4, 9], True, seed=21), padded_batch([6, 2, 5], True, seed=22)]
    n_new = 8
    refs = [hf_greedy(model, ids, mask, n_new, eos_token_id=None, pad_token_id=0) for ids, mask in batches]
    with torch.no_grad():
        logits = [rt.prefill(ids, mask, client=c) for c, (ids, mask) in enumerate(batches)]
        toks = [[lg[:, -1].argmax(-1)] for lg in logits]
        for _ in range(n_new - 1):
            for c in (0, 1):
                toks[c].append(rt.decode(toks[c][-1], client=c)[:, -1].argmax(-1))
    for c in (0, 1):
        assert torch.equal(torch.stack(toks[c], 1), refs[c]), f"client {c}"
    # and the helper generates the same for client 1 on a fresh runtime
    gen = split_generate(SplitRuntime(tiny, SplitSpec(1, 1), n_clients=2), *batches[1], n_new, client=1)
    assert torch.equal(gen.tokens, refs[1])


def test_decode_taps_see_one_vector_and_position_per_sample(tiny):
    ids, mask = padded_batch([3, 7], True, seed=4)
    rt = SplitRuntime(tiny, SplitSpec(2, 1))
    tap = RecordingTap()
    rt.wire.taps.append(tap)
    split_generate(rt, ids, mask, 4, eos_token_id=None)
    phases = [m.phase for m in tap.received]
    assert phases == [Phase.PREFILL, Phase.DECODE, Phase.DECODE, Phase.DECODE]
    for k, m in enumerate(tap.received[1:]):
        assert m.tensor.shape == (2, tiny.model.config.hidden_size)
        assert m.ints.tolist() == [3 + k, 7 + k]  # each sample's own position (left padding does not count)
        assert m.past == ids.shape[1] + k and m.seqlen == 1


def test_server_receives_the_defended_hidden_state(tiny):
    """The defense sits on the client's outgoing edge: the tap sees h_A + ε, the model output changes."""
    ids, mask = padded_batch([5, 3], False, seed=9)
    p = 2

    def shift(h, generator=None):
        return h + 0.5

    clean, defended = SplitRuntime(tiny, SplitSpec(p, 1)), SplitRuntime(tiny, SplitSpec(p, 1), defense=shift)
    taps = [RecordingTap(), RecordingTap()]
    clean.wire.taps.append(taps[0])
    defended.wire.taps.append(taps[1])
    with torch.no_grad():
        a, b = clean.forward(ids, mask), defended.forward(ids, mask)
    want = centralized_hidden(tiny.model, ids, mask)[p][mask.bool()]
    assert float((taps[0].received[0].tensor - want).abs().max()) <= 1e-5
    assert float((taps[1].received[0].tensor - (want + 0.5)).abs().max()) <= 1e-5
    assert max_diff_at_real(a, b, mask) > 1e-3
