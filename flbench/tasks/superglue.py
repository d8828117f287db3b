"""SuperGLUE tasks (Wang et al., 2019) from the official validation JSONL files (`superglue/<task>.val.jsonl`),
carved into fixed train/eval halves (see flbench.tasks.base). Prompts and verbalisers follow
lm-evaluation-harness's super_glue tasks.

Hub fallback: aps/super_glue (the parquet copy of `super_glue`), validation split, whose rows carry integer
class labels; they are mapped back to the label strings and nesting of the official JSONL files (WSC: the
`wsc.fixed` config; MultiRC: one hub row per answer, regrouped into passages)."""
from __future__ import annotations

from flbench.tasks.base import Example, Task, as_bool_label, as_choice_label, tasks
from flbench.tasks.hub import Hub, per_row
from flbench.tasks.metrics import accuracy, macro_f1, multirc_em0_f1a

SUPERGLUE_HUB = "aps/super_glue"


def _bool_label(r: dict) -> dict:
    return {**r, "label": "true" if int(r["label"]) == 1 else "false"}


def _named_label(*names: str):
    return lambda r: {**r, "label": names[int(r["label"])]}


def _wsc_row(r: dict) -> dict:
    target = {k: r[k] for k in ("span1_index", "span2_index", "span1_text", "span2_text")}
    return {"text": r["text"], "target": target, "idx": r["idx"], "label": "true" if int(r["label"]) == 1 else "false"}


def _multirc_passages(rows: list[dict]) -> list[dict]:
    """Hub MultiRC (one row per answer option, `idx` = {paragraph, question, answer}) → official passages."""
    passages: dict = {}
    for r in rows:
        ix = r["idx"]
        p = passages.setdefault(ix["paragraph"], {"idx": ix["paragraph"], "passage": {"text": r["paragraph"], "questions": {}}})
        q = p["passage"]["questions"].setdefault(ix["question"], {"question": r["question"], "answers": [], "idx": ix["question"]})
        q["answers"].append({"text": r["answer"], "idx": ix["answer"], "label": int(r["label"])})
    out = []
    for p in passages.values():
        p["passage"]["questions"] = list(p["passage"]["questions"].values())
        out.append(p)
    return out


def _hub(config: str, relpath: str, convert) -> Hub:
    return Hub(SUPERGLUE_HUB, config, {relpath: "validation"}, convert)


class _SuperGlue(Task):
    label_names: tuple = ()  # labels in the order of the choices (empty: true/false → 0/1)

    def to_examples(self, rows: list[dict]) -> list[Example]:
        where = f"{self.relpath}"
        out = []
        for r in rows:
            lab = (as_choice_label(r["label"], self.label_names, where) if self.label_names
                   else as_bool_label(r["label"], where))
            out.append(Example(id=str(r.get("idx")), fields=r, label=lab))
        return out


@tasks.register("boolq")
class BoolQ(_SuperGlue):
    """SuperGLUE BoolQ (Clark et al., 2019): yes/no questions about a Wikipedia passage; accuracy."""

    name = "boolq"
    relpath = "superglue/boolq.val.jsonl"
    hub = _hub("boolq", relpath, per_row(_bool_label))
    required = ("passage", "question", "label")

    def prompt(self, ex):
        return f"{ex.fields['passage']}\nQuestion: {ex.fields['question']}?\nAnswer:"

    def choices(self, ex):
        return ["no", "yes"]


@tasks.register("cb")
class CB(_SuperGlue):
    """SuperGLUE CommitmentBank (de Marneffe et al., 2019): 3-way entailment; accuracy and macro-F1."""

    name = "cb"
    relpath = "superglue/cb.val.jsonl"
    hub = _hub("cb", relpath, per_row(_named_label("entailment", "contradiction", "neutral")))
    required = ("premise", "hypothesis", "label")
    metrics = ("accuracy", "macro_f1")  # macro_f1 is corpus-level: its CI recomputes it on resampled examples
    label_names = ("entailment", "contradiction", "neutral")
    n_choices = 3

    def prompt(self, ex):
        return f"{ex.fields['premise']}\nQuestion: {ex.fields['hypothesis']}. True, False, or Neither?\nAnswer:"

    def choices(self, ex):
        return ["True", "False", "Neither"]

    def score(self, examples, preds):
        golds = [e.label for e in examples]
        return {"accuracy": accuracy(golds, preds), "macro_f1": macro_f1(golds, preds, 3)}


@tasks.register("copa")
class COPA(_SuperGlue):
    """SuperGLUE COPA (Roemmele et al., 2011): pick the more plausible cause/effect; accuracy."""

    name = "copa"
    relpath = "superglue/copa.val.jsonl"
    hub = _hub("copa", relpath, per_row(dict))
    required = ("premise", "choice1", "choice2", "question", "label")
    label_names = (0, 1)

    def prompt(self, ex):
        connector = {"cause": "because", "effect": "therefore"}[ex.fields["question"]]
        return ex.fields["premise"].strip()[:-1] + f" {connector}"  # drop the final period

    def choices(self, ex):
        return [c[0].lower() + c[1:] for c in (ex.fields["choice1"], ex.fields["choice2"])]


@tasks.register("rte")
class RTE(_SuperGlue):
    """SuperGLUE RTE (Dagan et al., 2005 …): does the premise entail the hypothesis; accuracy."""

    name = "rte"
    relpath = "superglue/rte.val.jsonl"
    hub = _hub("rte", relpath, per_row(_named_label("entailment", "not_entailment")))
    required = ("premise", "hypothesis", "label")
    label_names = ("entailment", "not_entailment")

    def prompt(self, ex):
        return f"{ex.fields['premise']}\nQuestion: {ex.fields['hypothesis']} True or False?\nAnswer:"

    def choices(self, ex):
        return ["True", "False"]


@tasks.register("wic")
class WiC(_SuperGlue):
    """SuperGLUE WiC (Pilehvar & Camacho-Collados, 2019): is a word used in the same sense twice; accuracy."""

    name = "wic"
    relpath = "superglue/wic.val.jsonl"
    hub = _hub("wic", relpath, per_row(_bool_label))
    required = ("sentence1", "sentence2", "start1", "end1", "label")

    def prompt(self, ex):
        f = ex.fields
        word = f["sentence1"][f["start1"]:f["end1"]]
        return (f"Sentence 1: {f['sentence1']}\nSentence 2: {f['sentence2']}\nQuestion: Is the word '{word}' "
                "used in the same way in the two sentences above?\nAnswer:")

    def choices(self, ex):
        return ["no", "yes"]


@tasks.register("wsc")
class WSC(_SuperGlue):
    """SuperGLUE WSC (Levesque et al., 2012): does the pronoun refer to the given noun phrase; accuracy."""

    name = "wsc"
    relpath = "superglue/wsc.val.jsonl"
    hub = _hub("wsc.fixed", relpath, per_row(_wsc_row))
    required = ("text", "target", "label")

    def prompt(self, ex):
        t = ex.fields["target"]
        return (f"Passage: {ex.fields['text']}\nQuestion: In the passage above, does the pronoun "
                f"\"*{t['span2_text']}*\" refer to \"*{t['span1_text']}*\"?\nAnswer:")

    def choices(self, ex):
        return ["no", "yes"]


@tasks.register("multirc")
class MultiRC(_SuperGlue):
    """SuperGLUE MultiRC (Khashabi et al., 2018): is each candidate answer correct; official EM0 and F1a."""

    name = "multirc"
    relpath = "superglue/multirc.val.jsonl"
    hub = _hub("multirc", relpath, _multirc_passages)
    required = ("passage",)
    metrics = ("em0", "f1a")
    primary_metric = "f1a"
    ci_unit = "group"  # one question with all its answer options: EM0 is per question, options are not independent

    def to_examples(self, rows):
        out = []
        for r in rows:  # one row = one passage (the carve unit), expanded into one example per answer option
            p = r["passage"]
            for q in p["questions"]:
                gid = f"{r['idx']}-{q['idx']}"
                for a in q["answers"]:
                    out.append(Example(id=f"{gid}-{a['idx']}", label=as_bool_label(a["label"], self.relpath),
                                       fields={"paragraph": p["text"], "question": q["question"], "answer": a["text"]},
                                       group=gid))
        return out

    def prompt(self, ex):
        f = ex.fields
        return f"{f['paragraph']}\nQuestion: {f['question']}\nAnswer: {f['answer']}\nIs the answer correct?"

    def choices(self, ex):
        return ["no", "yes"]

    def score(self, examples, preds):
        return multirc_em0_f1a([e.group or e.id for e in examples], [e.label for e in examples], preds)

    def example_scores(self, examples, preds):
        return {}  # both metrics are corpus-level (pooled F1a, EM0 per question)
