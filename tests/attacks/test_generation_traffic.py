"""Generation traffic (--victim-mode generate): prompt and fed-back answer on the wire, scored apart."""
from __future__ import annotations

import json

import pytest

from attacks import Knowledge, make_attack
from attacks.generation_traffic import capture_generation
from defenses import make_defense, make_generator
from flbench.core.errors import FlbenchError
from flbench.data import load_corpus
from splits import SplitRuntime, SplitSpec
from splits.inference import split_generate


@pytest.fixture(scope="module")
def victims():
    return [r.text for r in load_corpus("private-records", limit=3, seed=4)]


def _rt(tiny, defense=None):
    return SplitRuntime(tiny, SplitSpec(1, 1), defense=defense or make_defense("none"),
                        generator=make_generator(seed=1))


def test_capture_holds_the_prompt_and_the_fed_back_answer(tiny, victims):
    rt = _rt(tiny)
    gc = capture_generation(rt, victims, new_tokens=5, max_length=12)
    tok = tiny.tokenizer
    for text, ids, p, a, h in zip(victims, gc.true_ids, gc.prompt_lengths, gc.answer_lengths, gc.obs.h_a):
        prompt = tok(text, truncation=True, max_length=12)["input_ids"]
        assert ids[:p] == prompt and len(ids) == p + 4  # 5 generated, the last never fed back
        assert 1 <= a <= 4 and h.shape[0] == len(ids)
    # the answer is the victim's own greedy generation through the same runtime
    enc = tok(victims[:1], return_tensors="pt", truncation=True, max_length=12)
    gen = split_generate(_rt(tiny), enc["input_ids"], enc["attention_mask"], 5, eos_token_id=tok.eos_token_id)
    assert gc.true_ids[0][gc.prompt_lengths[0]:] == gen.tokens[0, :-1].tolist()
    parts = gc.segments(gc.true_ids)
    assert [len(x) for x in parts["prompt"]] == gc.prompt_lengths
    assert [len(x) for x in parts["answer"]] == gc.answer_lengths


def test_batched_prompts_are_left_padded_like_one_at_a_time(tiny, victims):
    # generation pads on the left: a right-padded batch would take a shorter prompt's first answer token from a
    # pad position (the bug this guards against)
    one = [capture_generation(_rt(tiny), [t], new_tokens=4, max_length=128).true_ids[0] for t in victims]
    assert len({len(ids) for ids in one}) > 1  # prompts of different lengths: the batch is padded
    assert capture_generation(_rt(tiny), victims, new_tokens=4, max_length=128, batch_size=3).true_ids == one


def test_new_tokens_below_two_is_refused(tiny, victims):
    with pytest.raises(FlbenchError, match="new_tokens=1"):
        capture_generation(_rt(tiny), victims, new_tokens=1)


def test_undefended_prompt_and_answer_are_recovered_exactly(tiny, victims):
    rt = _rt(tiny)
    gc = capture_generation(rt, victims, new_tokens=6, max_length=12)
    knowledge = Knowledge.from_runtime(rt)
    rec = make_attack("map-inversion", knowledge, candidates="all").fit([], knowledge).invert(gc.obs)
    assert rec == gc.true_ids  # h_A of the prompt and of every fed-back token
    # the server's own h_B through the public tail gives the untuned victim's greedy answer exactly
    lens = make_attack("output-inversion", knowledge, decoder="public-tail").fit([], knowledge)
    answer = gc.segments(lens.invert(gc.obs))["answer"]
    assert answer == gc.segments(gc.true_ids)["answer"]


def test_flbench_attack_reports_prompt_and_answer_apart(cli):
    code, out, err = cli("attack", "--model", "tiny-llama", "--split", "1,1", "--attack", "output-inversion",
                         "--attack-param", "decoder=public-tail", "--limit", "2", "--aux-limit", "2",
                         "--victim-mode", "generate", "--new-tokens", "4", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["victim_mode"] == "generate"
    seg = res["segments"]
    assert seg["answer"]["metrics"]["token_accuracy"]["mean"] == 1.0 and seg["answer"]["tokens"] > 0
    assert seg["prompt"]["tokens"] > 0


@pytest.mark.parametrize("args, match", [
    (["--new-tokens", "3"], "--new-tokens applies to --victim-mode generate"),
    (["--victim-mode", "generate", "--releases", "2"], "--releases"),
    (["--victim-mode", "generate", "--new-tokens", "1"], "--new-tokens"),
    (["--victim-mode", "chat"], "chat"),
])
def test_bad_victim_mode_options_are_one_line_errors(cli, args, match):
    code, out, err = cli("attack", "--model", "tiny-llama", "--split", "1,1", "--limit", "2", *args)
    assert code == 2 and out == "" and match in err and len(err.strip().splitlines()) == 1, err
