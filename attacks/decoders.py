"""Trainable inversion decoders, the loop that fits them on auxiliary text, and their training budget.

A decoder maps observed hidden states (B, T, d) to token logits (B, T, V): a body (public blocks, a light
MLP, or nothing) → a final RMSNorm → the public LM head. By default the LM head (tied to the embedding in
most small LLaMAs) stays frozen and training uses a sampled softmax over the batch's targets plus random
negatives, so one step costs a fraction of a full-vocabulary softmax on CPU; decoding uses the full head.

Training budget (`DecoderAttack`, shared by the learned attacks). An under-trained decoder is a weak attack,
and a weak attack makes a defense look protective, so by default (`patience` > 0) a decoder trains to a
validation plateau. A seeded part of the PUBLIC auxiliary texts is held out (never victim data) and run once
through the attacker's own replay of the client (`attacks.base.SimulatedClient`: public head, the defense's
law with the attacker's own seeded noise draws, wire rounding), the same way as the training inputs: a fixed
validation batch, so every point of the curve measures the same thing. Every `eval_every` steps the
full-vocabulary token accuracy and loss on it are recorded; after `patience` evaluations without a gain of
at least `min_delta` in accuracy the learning rate is divided by 10 (at most `lr_cuts` times), and at the
next such plateau training stops; `steps` is only the maximum budget. The best-validation weights are kept
(in memory). Sources: early stopping on a held-out set with the best weights restored, Prechelt, "Early
Stopping — But When?" (Neural Networks: Tricks of the Trade, 1998) and Keras `EarlyStopping(min_delta,
patience, restore_best_weights=True)`; the learning-rate cut at a plateau, PyTorch `ReduceLROnPlateau`.

`patience=0` is the fixed budget the earlier records used, reproduced bit for bit: every aux text trains,
linear warm-up then cosine decay over exactly `steps` steps, the last weights, no validation.

Resumable fits. A plateau fit can take hours on a CPU, longer than a session; with a `checkpoint` path
(`Attack.fit_checkpoint`, set by attacks.fit_cache next to the entry the fit will become) the loop writes its
whole state every `eval_every` steps: the trainable weights, the optimizer and scheduler, the plateau tracker
(curve, best weights, patience count, cuts) and every random generator it draws from (its own, the simulated
client's noise, torch's global one). A killed fit restarted on the same key continues from the last checkpoint
and ends bit-identical to an uninterrupted one (tests/attacks/test_decoder_training.py); the file is deleted when
the fit completes. It is written with `torch.save` to a temporary name and renamed, and read back with
`torch.load(weights_only=True)` (tensors and plain containers only, no pickled objects).
"""
from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from attacks.base import Attack, Knowledge, SimulatedClient, pad_batch
from flbench.core.errors import FlbenchError
from flbench.core.params import Fraction, NonNegativeInt, PositiveInt
from splits.parts import Part
from splits.sequence import pad_rows, positions_from_mask


class ResidualMLP(nn.Module):
    """x + W2 gelu(W1 rmsnorm(x)); W2 starts at zero so the decoder starts as the logit lens."""

    def __init__(self, d: int, hidden: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(d))
        self.eps = eps
        self.up = nn.Linear(d, hidden)
        self.down = nn.Linear(hidden, d)
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def forward(self, x: torch.Tensor, mask2d: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        n = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + self.eps) * self.scale
        return x + self.down(nn.functional.gelu(self.up(n)))


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # inputs (B, T, d), targets (B, T), loss mask (B, T)


class Decoder(nn.Module):
    def __init__(self, body: nn.Module | None, norm: nn.Module, lm_head: nn.Module, train_head: bool = False) -> None:
        super().__init__()
        self.body = body
        self.norm = norm
        self.lm_head = lm_head
        self.lm_head.requires_grad_(train_head)

    def features(self, h: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        if position_ids is None:
            position_ids = positions_from_mask(mask)
        x = self.body(h, mask, position_ids) if self.body is not None else h
        return self.norm(x)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.features(h, mask))

    @torch.no_grad()
    def predict(self, hs: list[torch.Tensor], batch_size: int = 16) -> list[list[int]]:
        """Argmax token per observed vector, for per-example (T_i, d) tensors."""
        self.eval()
        out: list[list[int]] = []
        for start in range(0, len(hs), batch_size):
            chunk = hs[start : start + batch_size]
            h, mask = pad_rows([x.float() for x in chunk], 0.0)
            ids = self(h, mask).argmax(-1)
            out.extend(ids[i, : x.shape[0]].tolist() for i, x in enumerate(chunk))
        return out

    @torch.no_grad()
    def evaluate(self, batch: Batch, batch_size: int = 16) -> tuple[float, float]:
        """Full-vocabulary token accuracy and mean cross-entropy on a (inputs, targets, loss mask) batch, scored
        `batch_size` rows at a time (memory bound only)."""
        was_training = self.training
        self.eval()
        h, targets, mask = batch
        correct, nll, n = 0, 0.0, 0
        for start in range(0, h.shape[0], batch_size):
            m = mask[start : start + batch_size]
            sel = m.bool()
            logits = self.lm_head(self.features(h[start : start + batch_size], m)[sel])
            y = targets[start : start + batch_size][sel]
            correct += int((logits.argmax(-1) == y).sum())
            nll += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            n += int(sel.sum())
        self.train(was_training)
        return correct / max(n, 1), nll / max(n, 1)


def build_decoder(model: Any, kind: str, n_blocks: int = 0, mlp_hidden: int = 1024, train_head: bool = False) -> Decoder:
    """`blocks`: copies of the public blocks 0..n_blocks-1 (the mirror of the head) + final norm + LM head;
    `mlp`: a residual 2-layer MLP + final norm + LM head; `lens`: final norm + LM head only."""
    inner = model.model
    norm = copy.deepcopy(inner.norm)
    head = copy.deepcopy(model.lm_head)
    if kind == "blocks" and n_blocks > 0:
        layers = [copy.deepcopy(b) for b in list(inner.layers)[:n_blocks]]
        body: nn.Module | None = Part("decoder", model.config, layers, 0, copy.deepcopy(inner.rotary_emb))
    elif kind == "mlp":
        body = ResidualMLP(int(model.config.hidden_size), mlp_hidden)
    else:
        body = None
    dec = Decoder(body, norm, head, train_head).float()
    dec.train()
    return dec


class _Plateau:
    """The plateau rule on the validation curve (module docstring): the best weights (highest accuracy, ties
    broken by lower loss) and, per evaluation, whether to go on, cut the learning rate or stop."""

    def __init__(self, decoder: nn.Module, patience: int, min_delta: float, lr_cuts: int) -> None:
        self.decoder, self.patience, self.min_delta, self.lr_cuts = decoder, patience, min_delta, lr_cuts
        self.curve: list[list[float]] = []  # [step, val token accuracy, val loss]
        self.best = (-math.inf, math.inf)
        self.best_step = 0
        self.state: dict[str, torch.Tensor] = {}
        self.reference = -math.inf  # accuracy at the last significant gain
        self.bad = 0
        self.cut_steps: list[int] = []

    def update(self, step: int, acc: float, loss: float) -> str | None:
        self.curve.append([step, round(acc, 6), round(loss, 6)])
        if acc > self.best[0] or (acc == self.best[0] and loss < self.best[1]):
            self.best, self.best_step = (acc, loss), step
            self.state = {n: p.detach().clone() for n, p in self.decoder.named_parameters() if p.requires_grad}
        if acc > self.reference and acc - self.reference >= self.min_delta:
            self.reference, self.bad = acc, 0
            return None
        self.bad += 1
        if self.bad < self.patience:
            return None
        self.bad = 0
        if len(self.cut_steps) < self.lr_cuts:
            self.cut_steps.append(step)
            return "cut"
        return "stop"

    @torch.no_grad()
    def restore(self) -> None:
        for n, p in self.decoder.named_parameters():
            if n in self.state:
                p.copy_(self.state[n])

    def state_dict(self) -> dict[str, Any]:
        return {"curve": self.curve, "best": list(self.best), "best_step": self.best_step, "state": self.state,
                "reference": self.reference, "bad": self.bad, "cut_steps": self.cut_steps}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.curve, self.best, self.best_step = d["curve"], tuple(d["best"]), d["best_step"]
        self.state, self.reference, self.bad, self.cut_steps = d["state"], d["reference"], d["bad"], d["cut_steps"]


_CHECKPOINT_VERSION = 1


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at `path` if there is one; a file that is unreadable or belongs to another fit is an error
    (its name is the fit's cache key, so it cannot be silently replaced)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        first = (str(e).strip().splitlines() or [""])[0][:100]
        raise FlbenchError(f"fit checkpoint {path} is unreadable ({type(e).__name__}: {first}); delete it to "
                           "refit from the start") from None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        raise FlbenchError(f"fit checkpoint {path} belongs to another fit (its budget, optimizer or weights "
                           "differ); delete it to refit from the start")
    return state


def train_decoder(
    decoder: Decoder,
    make_batch: Callable[[torch.Generator], Batch],
    steps: int,
    lr: float,
    weight_decay: float = 0.0,
    vocab_sample: int = 8192,
    seed: int = 0,
    desc: str = "fit decoder",
    val: Batch | None = None,
    eval_every: int = 100,
    patience: int = 0,
    min_delta: float = 0.0,
    lr_cuts: int = 0,
    eval_batch: int = 16,
    checkpoint: str | os.PathLike | None = None,
    generators: Sequence[torch.Generator] = (),
) -> dict[str, Any]:
    """AdamW on cross-entropy; sampled softmax when `0 < vocab_sample < V` (targets always included).

    `patience=0`: exactly `steps` steps, warm-up + cosine decay, the last weights. `patience > 0`: the plateau
    rule of the module docstring on the fixed validation batch `val` (evaluated at step 0, every `eval_every`
    steps and at the last step), warm-up then a constant learning rate cut by 10 at a plateau; at most
    `steps` steps; the best-validation weights are restored. Returns the training log: seconds, steps run
    (`steps`, `stopped_at`), `budget`, `stop_reason` ("plateau" or "budget"), the running training loss and
    accuracy and, with validation, the curve [[step, val token accuracy, val loss], ...], the best step and
    its accuracy and loss, the steps where the learning rate was cut and the seconds spent validating.

    `checkpoint`: a file where the loop's whole state is written every `eval_every` steps and from which a
    restarted fit continues (module docstring); `generators`: the other generators `make_batch` draws from (their
    states are part of the checkpoint). The log then says from which step it `resumed_from` (0 = a fresh fit) and
    the `resumed_seconds` earlier processes spent on it (included in `seconds`)."""
    plateau = patience > 0
    if plateau and val is None:
        raise FlbenchError("train_decoder: patience > 0 needs a validation batch (val)")
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in decoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay) if params else None
    scale = [1.0]  # learning-rate factor left by the cuts (plateau mode)
    shape = _warmup_constant(steps, scale) if plateau else _warmup_cosine(steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, shape) if opt else None
    weight = decoder.lm_head.weight
    bias = getattr(decoder.lm_head, "bias", None)
    vocab = int(weight.shape[0])
    tracker = _Plateau(decoder, patience, min_delta, lr_cuts)
    t0 = time.perf_counter()
    val_seconds = 0.0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    fingerprint = {"version": _CHECKPOINT_VERSION, "steps": steps, "lr": lr, "weight_decay": weight_decay,
                   "vocab_sample": vocab_sample, "seed": seed, "eval_every": eval_every, "patience": patience,
                   "min_delta": min_delta, "lr_cuts": lr_cuts, "generators": len(generators),
                   "params": [[n, list(p.shape)] for n, p in decoder.named_parameters() if p.requires_grad]}
    start, before = 0, 0.0  # the step a checkpoint resumes after, and the seconds the fit had run before it
    run_loss = run_acc = math.nan
    resumed = _load_checkpoint(ckpt, fingerprint) if ckpt is not None else None
    if resumed is not None:
        with torch.no_grad():
            for n, p in decoder.named_parameters():
                if p.requires_grad:
                    p.copy_(resumed["params"][n])
        if opt is not None:
            opt.load_state_dict(resumed["opt"])
            sched.load_state_dict(resumed["sched"])
        scale[0] = resumed["scale"]
        tracker.load_state_dict(resumed["tracker"])
        gen.set_state(resumed["gen"])
        for g, st in zip(generators, resumed["generators"]):
            g.set_state(st)
        torch.set_rng_state(resumed["torch_rng"])
        start, before, val_seconds = resumed["step"], resumed["seconds"], resumed["val_seconds"]
        run_loss, run_acc = resumed["run_loss"], resumed["run_acc"]

    def save(step: int) -> None:
        _save_checkpoint(ckpt, {
            "fingerprint": fingerprint, "step": step, "seconds": before + time.perf_counter() - t0,
            "val_seconds": val_seconds, "run_loss": run_loss, "run_acc": run_acc, "scale": scale[0],
            "params": {n: p.detach().clone() for n, p in decoder.named_parameters() if p.requires_grad},
            "opt": opt.state_dict() if opt is not None else {}, "sched": sched.state_dict() if sched else {},
            "tracker": tracker.state_dict(), "gen": gen.get_state(), "generators": [g.get_state() for g in generators],
            "torch_rng": torch.get_rng_state()})

    def validate(step: int) -> str | None:
        nonlocal val_seconds
        t = time.perf_counter()
        acc, loss = decoder.evaluate(val, eval_batch)
        val_seconds += time.perf_counter() - t
        return tracker.update(step, acc, loss)

    if plateau and resumed is None:
        validate(0)
    done, reason = start, "budget"
    decoder.train()
    bar = tqdm(range(start + 1, steps + 1), desc=desc, file=sys.stderr, mininterval=2.0, leave=False,
               initial=start, total=steps)
    for step in bar:
        h, targets, mask = make_batch(gen)
        sel = mask.bool()
        feats = decoder.features(h, mask)[sel]
        y = targets[sel]
        if 0 < vocab_sample < vocab:
            cand = torch.unique(torch.cat([y, torch.randint(vocab, (vocab_sample,), generator=gen)]))
            logits = feats @ weight[cand].T
            if bias is not None:
                logits = logits + bias[cand]
            y_local = torch.searchsorted(cand, y)
            pred_ok = cand[logits.argmax(-1)] == y
        else:
            logits = decoder.lm_head(feats)
            y_local = y
            pred_ok = logits.argmax(-1) == y
        loss = nn.functional.cross_entropy(logits, y_local)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
        acc = float(pred_ok.float().mean())
        loss = loss.detach()
        run_loss = float(loss) if math.isnan(run_loss) else 0.9 * run_loss + 0.1 * float(loss)
        run_acc = acc if math.isnan(run_acc) else 0.9 * run_acc + 0.1 * acc
        done = step
        if plateau and (step % eval_every == 0 or step == steps):
            action = validate(step)
            bar.set_postfix(loss=f"{run_loss:.3f}", val_acc=f"{tracker.curve[-1][1]:.3f}", refresh=False)
            if action == "cut":
                scale[0] *= 0.1
            elif action == "stop":
                reason = "plateau"
                break
        else:
            bar.set_postfix(loss=f"{run_loss:.3f}", acc=f"{run_acc:.3f}", refresh=False)
        if ckpt is not None and step % eval_every == 0 and step < steps:
            save(step)
    bar.close()
    log: dict[str, Any] = {"seconds": before + time.perf_counter() - t0, "steps": done, "stopped_at": done,
                           "budget": steps, "stop_reason": reason, "loss": run_loss, "train_accuracy": run_acc}
    if ckpt is not None:  # the step it resumed from (0 = fresh) and the seconds earlier processes had run
        log.update(resumed_from=start, resumed_seconds=round(before, 3))
        ckpt.unlink(missing_ok=True)
    if plateau:
        tracker.restore()
        log.update(eval_every=eval_every, curve=tracker.curve, best_step=tracker.best_step,
                   val_accuracy=tracker.best[0], val_loss=tracker.best[1], lr_cut_steps=tracker.cut_steps,
                   validation_seconds=round(val_seconds, 3))
    decoder.eval()
    return log


def _warmup_cosine(steps: int) -> Callable[[int], float]:
    warm = max(1, steps // 20)

    def f(i: int) -> float:
        if i < warm:
            return (i + 1) / warm
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, steps - warm)))

    return f


def _warmup_constant(steps: int, scale: list[float]) -> Callable[[int], float]:
    """Linear warm-up over min(100, steps // 20) steps, then `scale[0]` (lowered by the plateau cuts)."""
    warm = max(1, min(100, steps // 20))
    return lambda i: min(1.0, (i + 1) / warm) * scale[0]


def holdout(seqs: Sequence[list[int]], n: int, seed: int, owner: str) -> tuple[list[list[int]], list[list[int]]]:
    """(training, validation) split of the tokenized auxiliary texts: a seeded random min(n, len // 5) of them
    (at least one) are held out for validation, the rest train."""
    if len(seqs) < 2:
        raise FlbenchError(f"{owner}: {len(seqs)} auxiliary text cannot be split into training and validation; "
                           "give at least 2, or pass patience=0 (fixed budget, no validation)")
    k = max(1, min(n, len(seqs) // 5))
    held = set(torch.randperm(len(seqs), generator=torch.Generator().manual_seed(seed))[:k].tolist())
    return [s for i, s in enumerate(seqs) if i not in held], [s for i, s in enumerate(seqs) if i in held]


@dataclass
class DecoderAttack(Attack):
    """Base of the attacks that train a decoder: the training budget and the plateau rule (module docstring).

    steps: the maximum number of training steps (with patience=0: exactly this many).
    patience: validation evaluations without a gain ≥ min_delta before the learning rate is cut or training
      stops; 0 = the fixed budget of the earlier records (no held-out texts, cosine decay, last weights).
    eval_every: steps between validation evaluations (None: steps // 10, between 1 and 100).
    min_delta: the smallest gain in validation token accuracy that counts as progress.
    lr_cuts: how many times the learning rate is divided by 10 at a plateau before training stops.
    val_texts: auxiliary texts held out for validation (at most a fifth of them, at least one).
    """

    steps: PositiveInt = 3000
    patience: NonNegativeInt = 4
    eval_every: PositiveInt | None = None
    min_delta: Fraction = 0.001
    lr_cuts: NonNegativeInt = 1
    val_texts: PositiveInt = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.patience > 0 and self.eval_every is not None and self.eval_every > self.steps:
            raise FlbenchError(f"attack {self.name!r}: eval_every={self.eval_every} is more than steps={self.steps}, "
                               "so no plateau could be seen; expected eval_every ≤ steps, or patience=0")

    fit_cacheable = True
    _decoder: Decoder | None = field(default=None, init=False, repr=False, compare=False)
    fit_log: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def _new_decoder(self, knowledge: Knowledge) -> Decoder:
        """A fresh, untrained decoder of this attack's kind, built from the public weights."""
        raise NotImplementedError

    def fit_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The trained decoder's trainable tensors (the rest is the public weights `_new_decoder` copies) and
        the fit log; None when no decoder was trained (e.g. output-inversion's lens decoders)."""
        if self._decoder is None or not self.fit_log:
            return None
        tensors = {n: p.detach().clone() for n, p in self._decoder.named_parameters() if p.requires_grad}
        return tensors, {"fit_log": self.fit_log}

    def load_fit_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], aux_texts: list[str],
                       knowledge: Knowledge) -> None:
        decoder = self._new_decoder(knowledge)
        want = {n for n, p in decoder.named_parameters() if p.requires_grad}
        if set(tensors) != want:
            extra = sorted(set(tensors) ^ want)
            raise FlbenchError(f"attack {self.name!r}: a cached fit has tensors that do not match this decoder "
                               f"(first difference: {extra[0]!r}); delete the cache entry to refit")
        decoder.load_state_dict(tensors, strict=False)
        self._decoder = decoder.eval()
        self.fit_log = dict(meta["fit_log"])

    def eval_interval(self) -> int:
        """Steps between validation evaluations (`eval_every`, or its default for this budget)."""
        return self.eval_every or min(100, max(1, self.steps // 10))

    def _train(self, decoder: Decoder, seqs: list[list[int]], knowledge: Knowledge, client: SimulatedClient,
               inputs: Callable[[SimulatedClient, torch.Tensor, torch.Tensor, torch.Generator], Batch], *,
               batch_size: int, lr: float, weight_decay: float, vocab_sample: int) -> dict[str, Any]:
        """Fit `decoder` on the tokenized auxiliary texts `seqs` under this budget and return the fit log.
        `inputs(client, ids, mask, gen)` → (inputs, targets, loss mask) as the server would see those ids
        through `client` (random choices from `gen`). Training batches go through `client`; the held-out
        validation texts through a second replay with its own seeded noise and a fixed generator, once."""
        train, held, val = seqs, [], None
        if self.patience > 0:
            train, held = holdout(seqs, self.val_texts, self.seed, f"attack {self.name!r}")
            val_client = SimulatedClient(knowledge, self.seed + 2)
            val = inputs(val_client, *pad_batch(held, val_client.pad_id), torch.Generator().manual_seed(self.seed + 3))

        def make_batch(gen: torch.Generator) -> Batch:
            ids, mask = pad_batch(sample_batch(train, batch_size, gen), client.pad_id)
            return inputs(client, ids, mask, gen)

        log = train_decoder(decoder, make_batch, self.steps, lr, weight_decay, vocab_sample, self.seed,
                            desc=f"{self.name} fit", val=val, eval_every=self.eval_interval(),
                            patience=self.patience, min_delta=self.min_delta, lr_cuts=self.lr_cuts,
                            eval_batch=batch_size, checkpoint=self.fit_checkpoint, generators=(client.noise_gen,))
        log.update(aux_texts=len(seqs), aux_tokens=sum(len(s) for s in seqs), train_texts=len(train),
                   val_texts=len(held), val_tokens=int(val[2].sum()) if val is not None else 0)
        return log


def sample_batch(seqs: list[list[int]], batch_size: int, gen: torch.Generator) -> list[list[int]]:
    """`batch_size` random sequences (with replacement across steps), drawn from `gen`."""
    idx = torch.randint(len(seqs), (min(batch_size, len(seqs)),), generator=gen).tolist()
    return [seqs[i] for i in idx]
