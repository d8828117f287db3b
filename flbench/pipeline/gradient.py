"""The backward channel: attacks on a cell's own fine-tuning traffic (`flbench run --task T --finetune-steps N
--attack gradient-label`), and the gradient defense's place in the pipeline (`--grad-defense`).

During split fine-tuning the client's tail sends dL/dh_B to the server after every training forward (through
the gradient defense, if any). A `TrainingTap` on the training runtime's wire records what the server saw of
the first `limit` training sequences (h_A, h_B, dL/dh_B), `train(..., trace=...)` records what the client
really sent (ids and labels of every batch, in wire order), and `evaluate_gradient_attack` scores an attack's
recovered targets against that truth:

    token_accuracy      per sequence, the fraction of its loss-carrying target tokens recovered (the primary
                        metric; with a whole-text LM loss: the recovered text's token accuracy, position 0
                        excluded as it is never a target)
    label_accuracy      per sequence, 1 when every target token is recovered: for a choice task trained with
                        the loss on the answer only (sst2), the fraction of training examples whose class word
                        is recovered
    label_chance        1 / number of choices of the task (guessing the class among its verbalised answers);
                        absent for tasks without choices
    detection_precision / detection_recall   of the positions the attack took as labelled

Each training sequence SENT is one entry: an example trained on in several epochs counts once per epoch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flbench.core.canonical import finite_or_null

# The gradient defense draws from its own stream: same --seed, another generator state than the h_A defense's.
GRAD_STREAM = 0x6772616442  # "gradB"


def grad_seed(seed: int) -> int:
    """The gradient defense's generator seed for run seed `seed` (reproducible, apart from the h_A stream)."""
    return (int(seed) ^ GRAD_STREAM) % 2**64


def grad_defense_and_generator(name: str, params: dict, seed: int | None, secure: bool = False):
    """(defense, generator) for the gradient edge; (None, None) for "none" (nothing on the edge). The defense
    must declare the edge (refused in one line otherwise)."""
    from defenses import make_defense, make_generator
    from splits.edges import check_edge

    if name == "none":
        return None, None
    defense = make_defense(name, **params)
    check_edge(defense, "grad_b")
    gen = make_generator(None, secure=True) if secure else make_generator(grad_seed(seed or 0))
    return defense, gen


def grad_defense_block(defense, releases: int) -> dict:
    """What a record says about the gradient defense: its self-description and its accounting over `releases`
    releases of each training example's gradient (the epochs it was trained in)."""
    if defense is None:
        return {"name": "none", "params": {}, "family": "none", "noise_sigma": 0.0, "relative": False,
                "epsilon": None, "delta": None}
    scale = defense.noise_scale()
    acc = defense.accounting(releases)
    stats = defense.stats()
    out = {"name": defense.name, "params": defense.params(), "family": defense.family,
           "noise_sigma": scale.value, "relative": scale.relative, "releases": releases,
           "snr": stats.get("snr_rms"), "epsilon": (acc or {}).get("epsilon"), "delta": (acc or {}).get("delta")}
    if acc:
        out["accounting"] = acc
    return finite_or_null(out)


class TrainingTap:
    """A wire tap that records the training traffic (TRAIN phase) of the first `limit` training sequences:
    each client's training forward (HIDDEN_A) is recorded whole, with its HIDDEN_B and GRAD_B, or not at all
    (so a tap that stops mid-round still holds complete forwards). `received` / `sent` as RecordingTap's."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sequences = 0
        self.received: list = []
        self.sent: list = []
        self._recording: dict[int, bool] = {}

    def __call__(self, direction: str, msg) -> None:
        from splits.wire import Kind, Phase

        if msg.phase != Phase.TRAIN:
            return
        if msg.kind == Kind.HIDDEN_A:
            take = self.sequences < self.limit
            self._recording[msg.client] = take
            self.sequences += msg.batch if take else 0
        if self._recording.get(msg.client):
            (self.received if direction == "client->server" else self.sent).append(msg)


@dataclass
class TrainingTraffic:
    """What a fine-tuning run leaves for gradient attacks: the server's recordings, the client's batches, the
    runtime (public weights, split, the defenses on both edges), the training task's public answers."""

    tap: TrainingTap
    trace: list = field(default_factory=list)
    rt: Any = None
    answers: tuple[tuple[int, ...], ...] | None = None
    chance: float | None = None
    task: str | None = None
    examples_per_epoch: int | None = None


def task_answers(tokenizer, task, examples: list, max_length: int) -> tuple[tuple[int, ...], ...] | None:
    """The token ids of a choice task's verbalised answers (public: the task's format), as the training pairs
    tokenize them; None for tasks without choices."""
    from flbench.tasks.scoring import encode_pair

    if getattr(task, "kind", None) != "choice" or not examples:
        return None
    ex = examples[0]
    context, _ = task.train_pair(ex)
    out = []
    for cont in task.continuations(ex):
        req = encode_pair(tokenizer, context, cont, max_length)
        out.append(tuple(req.ids[len(req.ids) - req.n_cont:]))
    return tuple(out)


def task_chance(task) -> float | None:
    """Guessing the class among the task's choices: 1 / n_choices (None without fixed choices)."""
    n = getattr(task, "n_choices", None)
    return 1.0 / n if getattr(task, "kind", None) == "choice" and n else None


def training_truth(trace: list, n: int) -> list[dict]:
    """The first `n` training sequences as the client sent them: real token ids and the positions t ≥ 1 whose
    token is a target of the loss (labels ≠ -100; position 0 is never predicted)."""
    out = []
    for batch in trace:
        for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
            real = mask.bool()
            row, lab = ids[real].tolist(), labels[real].tolist()
            out.append({"ids": row, "targets": [t for t in range(1, len(row)) if lab[t] != -100]})
            if len(out) == n:
                return out
    return out


def score_gradient(recovered: list[list[int]], truth: list[dict], labelled: list[list[int]] | None, seed: int,
                   chance: float | None = None) -> dict:
    """Recovery metrics of a gradient attack (see the module docstring), each with a seeded bootstrap CI.
    `labelled` None: the attack does not decide which positions carry a label (no detection metrics)."""
    from flbench.metrics import bootstrap_ci

    per: dict[str, list[float]] = {"token_accuracy": [], "label_accuracy": []}
    if labelled is not None:
        per.update(detection_precision=[], detection_recall=[])
    for i, (rec, t) in enumerate(zip(recovered, truth)):
        targets = t["targets"]
        if not targets:
            continue
        hits = [rec[p] == t["ids"][p] for p in targets]
        per["token_accuracy"].append(sum(hits) / len(hits))
        per["label_accuracy"].append(float(all(hits)))
        if labelled is None:
            continue
        lab = labelled[i]
        found = set(lab) & set(targets)
        if lab:
            per["detection_precision"].append(len(found) / len(set(lab)))
        per["detection_recall"].append(len(found) / len(targets))
    out: dict[str, Any] = {k: bootstrap_ci(v, seed=seed) for k, v in per.items()}
    if chance is not None:
        out["label_chance"] = chance
    return out


def evaluate_gradient_attack(name: str, params: dict, traffic: TrainingTraffic, seed: int) -> dict:
    """Fit a gradient attack on the public weights and the training runtime's knowledge, invert the recorded
    training traffic, score it against what the client sent. Returns a result shaped like
    `flbench.pipeline.attack.evaluate_attack`'s (what `flbench run` puts in a record's attack block)."""
    from dataclasses import replace

    from attacks import Knowledge, make_attack, observe
    from flbench.core.errors import FlbenchError

    rt = traffic.rt
    knowledge = replace(Knowledge.from_runtime(rt), answers=traffic.answers)
    attack = make_attack(name, knowledge, **params)
    t0 = time.perf_counter()
    attack.fit([], knowledge)
    fit_s = time.perf_counter() - t0
    obs = observe(traffic.tap, knowledge.observes, traffic.examples_per_epoch)
    truth = training_truth(traffic.trace, len(obs))
    if [len(t["ids"]) for t in truth] != obs.lengths:
        raise FlbenchError("gradient attack: the recorded training traffic does not match the batches the client "
                           "sent (lengths differ)")
    t1 = time.perf_counter()
    recovered = attack.invert(obs)
    invert_s = time.perf_counter() - t1
    metrics = score_gradient(recovered, truth, getattr(attack, "labelled", None), seed, traffic.chance)
    tok = rt.loaded.tokenizer

    def show(ids: list[int], positions: list[int]) -> str:
        return tok.decode([ids[p] for p in positions], skip_special_tokens=False)

    examples = [{"original": show(t["ids"], t["targets"]), "recovered": show(r, t["targets"])}
                for r, t in list(zip(recovered, truth))[:3]]
    epochs = sorted(set(obs.epochs or [])) if obs.epochs else None
    return finite_or_null({
        "attack": name,
        "attack_params": attack.describe()["params"],
        "data": f"train:{traffic.task}" if traffic.task else "train",
        "n": len(truth),
        "metrics": metrics,
        "seconds": {"fit": round(fit_s, 3), "invert": round(invert_s, 3)},
        "fit_log": getattr(attack, "fit_log", {}),
        "diagnostics": {**attack.diagnostics([t["ids"] for t in truth]),
                        "training_steps": len(set(obs.steps or [])), "epochs": epochs},
        "examples": examples,
        "channel": attack.channel,  # what the attack read: "grad_b" (backward alone), "h_a", or both
    })
