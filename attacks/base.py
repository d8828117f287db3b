"""What every attack shares: the registry, the attacker's knowledge, the observations and the life cycle.

    from attacks import make_attack, Knowledge, capture
    knowledge = Knowledge.from_runtime(rt)                 # public weights, split, defense (class + params)
    obs, true_ids = capture(rt, victim_texts, batch_size=8)  # what the server's wire tap recorded
    attack = make_attack("learned-inversion", knowledge, steps=300)  # fails here if obs are unavailable
    recovered_ids = attack.fit(aux_texts, knowledge).invert(obs)

Threat model (../shared/DESIGN.md): the attacker is the honest-but-curious server. It sees the head's output
h_A after the defense, the lengths/positions in the message headers, its own output h_B and, in training,
the gradient dL/dh_B the client's tail sends back (after the gradient defense, if any). It knows the
architecture, the partition points, the public pretrained weights, the defense and its parameters, and has
public auxiliary text; it does not know the private data, the clients' adapters or the noise draws.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from defenses import BaseDefense, NoDefense
from flbench.core.errors import FlbenchError
from flbench.core.params import NonNegativeInt, check_params, param_fields
from flbench.core.registry import Registry
from splits.sequence import pad_rows

attacks: Registry[type[Attack]] = Registry("attack")

# What a vantage point on the wire can record (names used in `Attack.requires`): h_A (received), h_B (sent),
# dL/dh_B (received during training). The server records all three.
OBSERVABLES = ("h_a", "h_b", "grad_b")
SERVER_VIEW = frozenset(OBSERVABLES)


def register(name: str):
    """Class decorator: register an attack class under `name` (a duplicate name raises) and set `cls.name`."""

    def deco(cls: type[Attack]) -> type[Attack]:
        cls.name = name
        return attacks.register(name)(cls)

    return deco


@dataclass
class Knowledge:
    """What the threat model grants the attacker (Kerckhoffs): public weights, split, defense, wire format.

    `defense` is the defense object the client runs (its class and parameters are public; the attacker never
    uses its generator or draws, see `fresh_defense`); `NoDefense()` when the client sends h_A as it is.
    `grad_defense` likewise for the defense on the client's gradient edge (dL/dh_B). `observes` says which
    messages the vantage point records: the server sees h_A (received), h_B (its own output) and, in
    training, dL/dh_B (received); an eavesdropper on one link only some of them. `head`: the attacker's own
    head when it built one (see `attacker_head`); the client's adapters are never in it. `answers`: the token ids of
    the training task's verbalised answers when the task is public and has them (e.g. sst2's " negative",
    " positive"), else None; gradient attacks may restrict their label candidates to them.
    """

    loaded: Any  # flbench.models.LoadedModel with the public pretrained weights
    spec: Any  # splits.SplitSpec
    defense: BaseDefense = field(default_factory=NoDefense)
    wire_dtype: str = "fp32"
    observes: frozenset[str] = SERVER_VIEW
    grad_defense: BaseDefense = field(default_factory=NoDefense)
    answers: tuple[tuple[int, ...], ...] | None = None
    head: Any = None  # the attacker's OWN head (splits.parts.Part), e.g. a surrogate it fine-tuned; None: public

    def __post_init__(self) -> None:
        if self.defense is None:  # a runtime without a defense on the edge
            self.defense = NoDefense()
        if self.grad_defense is None:
            self.grad_defense = NoDefense()
        self.observes = frozenset(self.observes)
        bad = sorted(self.observes - set(OBSERVABLES))
        if bad:
            raise FlbenchError(f"knowledge: unknown observation {bad[0]!r}; accepted: {', '.join(OBSERVABLES)}")

    @classmethod
    def from_runtime(cls, rt: Any, observes: frozenset[str] | set[str] = SERVER_VIEW) -> Knowledge:
        client = rt.clients[0]
        return cls(rt.loaded, rt.spec, client.defense or NoDefense(), rt.wire.dtype, frozenset(observes),
                   getattr(client, "grad_defense", None) or NoDefense())

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    def attacker_head(self) -> Any:
        """A copy of the head the attacker runs: its own `head` when it has one — a surrogate of the client's
        fine-tuned head, trained by the attacker on public data with the client's known recipe (an adaptive
        attacker against training-time defenses such as NoPeek) — else the public pretrained head."""
        import copy

        from splits.partition import build_head

        head = copy.deepcopy(self.head) if self.head is not None else build_head(self.model, self.spec)
        return head.eval().requires_grad_(False)

    def fresh_defense(self) -> BaseDefense:
        """A new defense with the same class and parameters (own statistics)."""
        return type(self.defense)(**self.defense.params())

    def fit_identity(self) -> dict[str, Any]:
        """What an attacker's fit on public text can depend on (attacks.fit_cache): the public weights the attacker
        runs (its own surrogate head's weights when it has one), the split, the h_A defense's law (class and
        parameters), the wire dtype and the compute dtype. Not the victims, the victim's adapters, the gradient-edge
        defense or the vantage point (an attack whose fit reads those must not declare `fit_cacheable`)."""
        import hashlib

        model = self.model
        head = None
        if self.head is not None:
            h = hashlib.sha256()
            for name, t in sorted(self.head.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
            head = h.hexdigest()
        ident = getattr(self.loaded, "identity", None) or {}
        return {"model": {"name": getattr(self.loaded, "name", "?"), "weights_sha256": ident.get("weights_sha256")},
                "split": str(self.spec), "defense": {"name": self.defense.name, "params": self.defense.params()},
                "wire_dtype": self.wire_dtype, "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
                "head": head}

    def describe(self) -> dict[str, Any]:
        return {
            "model": getattr(self.loaded, "name", "?"),
            "split": str(self.spec),
            "defense": self.defense.describe(),
            "grad_defense": self.grad_defense.describe(),
            "wire_dtype": self.wire_dtype,
            "observes": sorted(self.observes),
        }


@dataclass
class Observations:
    """The attacker's recordings, one entry per example (sample-major, padding already removed by the wire).

    h_a[i]: (T_i, d) hidden states the server received for example i (after the defense), or None when
    the vantage point did not record them; h_b[i] likewise for the server's own outputs. `lengths[i]` = T_i.
    Training traffic (entries from TRAIN forwards): grad_b[i] is the (T_i, d) gradient dL/dh_B the client
    sent back for entry i (after the gradient defense), None for an entry of other traffic (eval, generation);
    `steps[i]` the training step it came from (the client's k-th training forward, from 0; -1: not
    training), `epochs[i]` the epoch (when the capture knows the examples per epoch, else None), `clients[i]`
    the client it came from. An entry of training traffic is one training sequence as one step sent it: an
    example trained on in several steps has one entry per step.
    """

    lengths: list[int]
    h_a: list[torch.Tensor] | None = None
    h_b: list[torch.Tensor] | None = None
    grad_b: list[torch.Tensor | None] | None = None
    steps: list[int] | None = None
    epochs: list[int] | None = None
    clients: list[int] | None = None
    # Repeated releases (the same text sent k times, fresh noise each time: retries, regenerations): h_a_releases[i]
    # is (k, T_i, d), release 0 being h_a[i]; None when each text crossed the wire once.
    h_a_releases: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def releases(self) -> int:
        """How many times each example's h_A was recorded (1 without repeated releases)."""
        return 1 if not self.h_a_releases else int(self.h_a_releases[0].shape[0])

    def pooled(self) -> Observations:
        """One h_A per example for attacks that read a single release: the mean of the k releases (for the
        Gaussian laws the sufficient statistic: Σ_j ||o_j − c||² = k ||ō − c||² + const, i.e. one release
        with σ/√k; for other laws a pooled estimate). Unchanged when there is one release."""
        if self.releases == 1:
            return self
        return replace(self, h_a=[r.mean(0) for r in self.h_a_releases], h_a_releases=None)

    def available(self) -> frozenset[str]:
        return frozenset(n for n in OBSERVABLES if getattr(self, n) is not None)

    def trained(self) -> list[int]:
        """Indices of the entries that carry a gradient (training traffic)."""
        return [i for i, g in enumerate(self.grad_b or []) if g is not None]


def _per_sample(messages: list[Any]) -> list[torch.Tensor]:
    """Split tapped messages into per-sample tensors; decode steps append to their prompt's samples."""
    from splits.wire import Phase

    samples: list[list[torch.Tensor]] = []
    group: list[int] = []  # sample indices of the latest prompt (prefill/eval/train) message
    for msg in messages:
        if msg.phase == Phase.DECODE:
            if len(group) != msg.batch:
                raise FlbenchError(f"observe: decode message #{msg.seq} with batch {msg.batch} has no matching prompt")
            for row, i in enumerate(group):
                samples[i].append(msg.tensor[row : row + 1])
            continue
        lengths = [int(n) for n in msg.ints]
        group = list(range(len(samples), len(samples) + len(lengths)))
        samples.extend([t] for t in torch.split(msg.tensor, lengths))
    return [torch.cat(parts) if len(parts) > 1 else parts[0] for parts in samples]


def _gradients(received: list[Any], examples_per_epoch: int | None
               ) -> tuple[list[torch.Tensor | None], list[int], list[int] | None, list[int]]:
    """Per entry (one per sample of each prompt HIDDEN_A received): its GRAD_B rows (None without), its
    training step, epoch and client. A GRAD_B continues its client's latest training forward (the parties
    enforce that), so it is matched by client, whatever the interleaving of several clients' messages."""
    from splits.wire import Kind, Phase

    grads: list[torch.Tensor | None] = []
    steps: list[int] = []
    clients: list[int] = []
    seen: dict[int, int] = {}  # client -> training sequences before this one (for epochs)
    epochs: list[int] = []
    forwards: dict[int, int] = {}  # client -> training forwards so far
    open_: dict[int, list[int]] = {}  # client -> entries of its training forward awaiting a GRAD_B
    for msg in received:
        if msg.kind == Kind.HIDDEN_A and msg.phase != Phase.DECODE:
            idx = list(range(len(grads), len(grads) + msg.batch))
            grads.extend([None] * msg.batch)
            clients.extend([msg.client] * msg.batch)
            if msg.phase == Phase.TRAIN:
                step = forwards.get(msg.client, 0)
                forwards[msg.client] = step + 1
                open_[msg.client] = idx
                steps.extend([step] * msg.batch)
                k = seen.get(msg.client, 0)
                epochs.extend((k + j) // examples_per_epoch if examples_per_epoch else -1 for j in range(msg.batch))
                seen[msg.client] = k + msg.batch
            else:
                steps.extend([-1] * msg.batch)
                epochs.extend([-1] * msg.batch)
        elif msg.kind == Kind.GRAD_B:
            idx = open_.pop(msg.client, None)
            if idx is None or len(idx) != msg.batch:
                raise FlbenchError(f"observe: GRAD_B message #{msg.seq} of client {msg.client} matches no training "
                                   "forward recorded by this tap")
            for i, g in zip(idx, torch.split(msg.tensor, [int(n) for n in msg.ints])):
                grads[i] = g
    return grads, steps, (epochs if examples_per_epoch else None), clients


def observe(tap: Any, observes: frozenset[str] | set[str] = SERVER_VIEW,
            examples_per_epoch: int | None = None) -> Observations:
    """Observations from a `splits.wire.RecordingTap`: HIDDEN_A messages it received, HIDDEN_B it sent and,
    for training traffic, the GRAD_B it received (matched to their forwards). `examples_per_epoch`: the size
    of each client's training set, when the vantage point knows it, so each entry's epoch can be told."""
    from splits.wire import Kind

    h_a = _per_sample([m for m in tap.received if m.kind == Kind.HIDDEN_A])
    h_b = _per_sample([m for m in tap.sent if m.kind == Kind.HIDDEN_B])
    if h_a and h_b and [len(t) for t in h_a] != [len(t) for t in h_b]:
        raise FlbenchError("observe: the tapped h_A and h_B messages describe different sequences")
    lengths = [len(t) for t in (h_a or h_b)]
    grads, steps, epochs, clients = _gradients(tap.received, examples_per_epoch)
    has_grad = any(g is not None for g in grads)
    if has_grad and len(grads) != len(lengths):
        raise FlbenchError("observe: the tapped GRAD_B messages describe other sequences than h_A / h_B")
    if not (has_grad and "grad_b" in observes):
        grads = None
    return Observations(lengths, h_a if "h_a" in observes else None, h_b if "h_b" in observes else None,
                        grads, steps if has_grad else None, epochs if has_grad else None,
                        clients if has_grad else None)


@torch.no_grad()
def capture(rt: Any, texts: Sequence[str], batch_size: int = 8, max_length: int = 128,
            observes: frozenset[str] | set[str] = SERVER_VIEW, releases: int = 1) -> tuple[Observations, list[list[int]]]:
    """Run victim `texts` through the split runtime (EVAL forward) with a wire tap; return what the server
    recorded and the true token ids (the victim's, for scoring only; the attacker never sees them).

    `releases` k > 1: every batch is sent k times in a row (a retry or regeneration without a KV cache; an
    epoch), each time through the defense with fresh noise; the observations then hold all k releases of
    each example (`Observations.h_a_releases`), release 0 as `h_a`."""
    from splits.wire import RecordingTap

    if not texts:
        raise FlbenchError("capture: no victim texts")
    if releases < 1:
        raise FlbenchError(f"capture: releases={releases!r}; expected a positive integer")
    tok = rt.loaded.tokenizer
    taps = [RecordingTap() for _ in range(releases)]
    true_ids: list[list[int]] = []
    try:
        for start in range(0, len(texts), batch_size):
            enc = tok(list(texts[start : start + batch_size]), return_tensors="pt", padding=True,
                      truncation=True, max_length=max_length)
            mask = enc["attention_mask"]
            if int(mask.sum(-1).min()) == 0:
                raise FlbenchError(f"capture: a victim text in batch starting at {start} has no tokens")
            for tap in taps:
                rt.wire.taps.append(tap)
                try:
                    rt.forward(enc["input_ids"], mask)
                finally:
                    rt.wire.taps.remove(tap)
            true_ids.extend(row[m.bool()].tolist() for row, m in zip(enc["input_ids"], mask))
    finally:
        for tap in taps:
            if tap in rt.wire.taps:
                rt.wire.taps.remove(tap)
    each = [observe(tap, observes) for tap in taps]
    obs = each[0]
    if obs.lengths != [len(t) for t in true_ids]:
        raise FlbenchError("capture: tapped lengths do not match the tokenized victim texts")
    if releases > 1 and obs.h_a is not None:
        obs.h_a_releases = [torch.stack([o.h_a[i] for o in each]) for i in range(len(obs))]
    return obs, true_ids


def tokenize_aux(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of the auxiliary texts, truncated to `max_length`, empty ones dropped."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    out = [list(ids) for ids in enc["input_ids"] if len(ids)]
    if not out:
        raise FlbenchError("attack fit: the auxiliary texts are empty")
    return out


def most_frequent_token(seqs: Sequence[Sequence[int]]) -> int:
    """The trivial baseline's guess: the most frequent token id in the auxiliary data."""
    counts = Counter(t for s in seqs for t in s)
    return counts.most_common(1)[0][0] if counts else 0


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids and mask (splits.sequence.pad_rows)."""
    return pad_rows(seqs, pad_id)


def wire_round(h: torch.Tensor, wire_dtype: str) -> torch.Tensor:
    """What the wire's dtype does to a tensor (rounding), so training inputs match what the server sees."""
    from splits.wire import WIRE_DTYPES

    return h if wire_dtype == "fp32" else h.to(WIRE_DTYPES[wire_dtype]).to(h.dtype)


class SimulatedClient:
    """The attacker's replay of the client's outgoing edge on public text: the public head, the known defense
    with the attacker's own noise draws (never the client's), and the wire dtype's rounding — i.e. what the
    server would receive for these ids (Kerckhoffs: everything but the private data and the noise draws)."""

    def __init__(self, knowledge: Knowledge, seed: int) -> None:
        self.head = knowledge.attacker_head()
        self.defense = knowledge.fresh_defense()
        self.noise_gen = torch.Generator().manual_seed(seed)
        self.wire_dtype = knowledge.wire_dtype
        tok = knowledge.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0

    @torch.no_grad()
    def h_a(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return wire_round(self.defense(self.head(ids, mask, pos), self.noise_gen), self.wire_dtype)


@dataclass
class Attack:
    """Base of all attacks: a small dataclass whose init fields are its printable, validated parameters.

    Life cycle (ART's inference attacks): construct (with `check(knowledge)`, see `make_attack`), then
    `fit(aux_texts, knowledge)` on public auxiliary text, then `invert(observations)` → recovered token ids
    per example, aligned position by position with the example's input tokens.

    Self-description (class attributes the runner, records and leaderboard ask, never naming an attack):
    `requires`: what it observes on the wire (names from OBSERVABLES: "h_a", "h_b", "grad_b"; an attack that
    requires "grad_b" reads training traffic, see flbench.pipeline.gradient); `primary_metric`: the
    recovery metric that ranks it (the leaderboard's AP, higher = more leakage); `combines_releases`: whether
    it combines repeated releases itself (else it is given their mean, `Observations.pooled`). Parameters are annotated
    dataclass fields validated by `flbench.core.params` (types, ranges, choices); rules that tie several
    parameters together go in `__post_init__` after `super().__post_init__()`.
    """

    name: ClassVar[str] = "?"
    requires: ClassVar[frozenset[str]] = frozenset({"h_a"})
    primary_metric: ClassVar[str] = "token_accuracy"
    # True: `_invert` reads every release (Observations.h_a_releases) itself; False: it gets the pooled mean.
    combines_releases: ClassVar[bool] = False
    # True: the fit reads only its parameters, the aux texts and `Knowledge.fit_identity()`, and `fit_state` /
    # `load_fit_state` round-trip it, so attacks.fit_cache may store and reuse it across cells.
    fit_cacheable: ClassVar[bool] = False
    seed: NonNegativeInt = 0
    _knowledge: Knowledge | None = field(default=None, init=False, repr=False, compare=False)
    # Where a long fit may checkpoint itself and resume after a crash (set by attacks.fit_cache to a file beside
    # the entry the fit will become; attacks with quick fits ignore it). Not a parameter: it changes no result.
    fit_checkpoint: Path | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The one validator (also for direct construction).
        for k, v in check_params(f"attack {self.name!r}", type(self), self.params()).items():
            setattr(self, k, v)

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring (what `flbench ls attacks` prints)."""
        doc = (cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""

    def check(self, knowledge: Knowledge) -> None:
        """Fail with a clear FlbenchError when the setup cannot give this attack what it needs."""
        missing = sorted(self.requires - knowledge.observes)
        if missing:
            raise FlbenchError(
                f"attack {self.name!r} needs {', '.join(missing)} but this vantage point records only "
                f"{', '.join(sorted(knowledge.observes)) or 'nothing'}; pick an attack that uses "
                f"{', '.join(sorted(knowledge.observes)) or 'other observations'}"
            )

    def fit(self, aux_texts: Sequence[str], knowledge: Knowledge) -> Attack:
        self.check(knowledge)
        self._knowledge = knowledge
        self._fit(list(aux_texts), knowledge)
        return self

    def _fit(self, aux_texts: list[str], knowledge: Knowledge) -> None:
        pass

    def fit_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The fitted state as (tensors, JSON-able metadata) for attacks.fit_cache, or None when there is
        nothing worth storing (default; an attack that returns one sets `fit_cacheable`)."""
        return None

    def load_fit_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], aux_texts: list[str],
                       knowledge: Knowledge) -> None:
        """Restore what `fit_state` returned, as if `fit(aux_texts, knowledge)` had just run."""
        raise NotImplementedError(f"attack {self.name!r} has no cacheable fit")

    def invert(self, obs: Observations) -> list[list[int]]:
        if self._knowledge is None:
            raise FlbenchError(f"attack {self.name!r}: call fit(aux_texts, knowledge) before invert")
        missing = sorted(self.requires - obs.available())
        if missing:
            raise FlbenchError(f"attack {self.name!r} needs observations {', '.join(missing)}, "
                               f"which were not recorded")
        with torch.no_grad():
            return self._invert(obs if self.combines_releases else obs.pooled())

    def _invert(self, obs: Observations) -> list[list[int]]:
        raise NotImplementedError

    def diagnostics(self, true_ids: list[list[int]]) -> dict[str, Any]:
        """Scorer-side diagnostics of the last `invert`, computed with the victims' true ids after it returned
        (the attack never sees them while inverting); e.g. the candidate recall of a pruned search, so a
        reader sees when pruning, not the defense, limited the attack. Default: none ({})."""
        return {}

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in param_fields(self)}

    def describe(self) -> dict[str, Any]:
        """What a run record stores about this attack."""
        return {"name": self.name, "class": type(self).__name__, "params": self.params(), "repr": repr(self),
                "requires": sorted(self.requires), "primary_metric": self.primary_metric,
                "summary": self.summary()}


def make_attack(name: str, knowledge: Knowledge | None = None, **params: Any) -> Attack:
    """Build a registered attack by name. Unknown names, unknown parameters, values of the wrong type or out
    of range raise a one-line FlbenchError naming the parameter and what is accepted; with `knowledge`, so
    does a setup that cannot provide the observations the attack needs. `knowledge=None` validates without
    any model (call it before loading one)."""
    cls = attacks.get(name)
    attack = cls(**check_params(f"attack {name!r}", cls, params))
    if knowledge is not None:
        attack.check(knowledge)
    return attack
