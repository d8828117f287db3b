"""`map-inversion`: the Bayes-optimal sequential decoder of h_A — exact public forward, the defense's
likelihood, the public model's prior.

Sources: SipIt ("Language Models are Injective and Hence Invertible", arXiv 2510.15511): a causal prefix of a
decoder determines its hidden states, so the input is recovered position by position by running the public
layers on the recovered prefix plus each candidate token and accepting the one that reproduces the observed
hidden state (candidates ordered by a gradient step on the input embedding). "Hidden No More" (arXiv
2505.18332) does the same per-position search on split-learning activations. BiSR (CCS 2024) combines
learned and optimisation-based inversion in split learning of LLMs; this is its exact forward taken to
the end. Under noise, scoring each candidate by the defense's own log-likelihood (Kerckhoffs: its law and
parameters are public) plus the public model's next-token log-prior is the MAP decision per position;
`beam` keeps the K best prefixes by cumulative score.

Search (per group of `batch_size` victims, all decoded in lockstep: every active victim has exactly t
recovered tokens at step t, so no padding):
  1. each prefix row keeps a KV cache of the public head (and one of the full public model, for the prior);
  2. candidates for position t: the whole vocabulary ("all") or a pruned set (see `candidates`);
  3. the head runs one decode step on every (row, candidate) pair — the prefix cache repeated over the
     candidate batch — and the defense scores log p(o_t | h_A(x_<t, c)); the prior adds log p(c | x_<t);
  4. the best `beam` (row, candidate) pairs per victim become the new prefixes; the caches advance.
Position 0 has no prefix (the default tokenizer adds no BOS), so h_A(c) at position 0 depends on c alone:
`_fit` runs the head once on the whole vocabulary at position 0 and every victim's first token is scored
exactly over all of it, whatever the candidate policy. The prior at position 0 is uniform (the public model
has no context to predict a text's first token from).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import DynamicCache

from attacks.base import Attack, Knowledge, Observations, register
from flbench.core.errors import FlbenchError
from flbench.core.params import PositiveInt
from splits.parts import Part


@register("map-inversion")
@dataclass
class MAPInversion(Attack):
    """Per-position MAP search with the public head's exact forward + the defense's likelihood + the public
    prior (SipIt, arXiv 2510.15511; Hidden No More, arXiv 2505.18332).

    Assumes: the server sees h_A (after the defense and the wire's rounding) and knows the public head and
    full-model weights, the split, and the defense's law and parameters (it must state its likelihood,
    `BaseDefense.observation_log_likelihood`); no training, no auxiliary text.
    candidates: "all" (the whole vocabulary: the reference, slow), "prior" (the prior's top_k),
      "posterior" (top_k of a linearised posterior: the log-prior plus the first-order change of the
      log-likelihood when the input embedding at t moves from the prior's favourite token to candidate c,
      computed from one gradient through the head — SipIt's gradient guidance under the defense's law),
      "prior+posterior" (the union of both top_k lists; the default).
    top_k: candidates per source for the pruned policies. prior: add the public model's next-token
      log-prior (MAP) or not (maximum likelihood). beam: prefixes kept per victim (1 = greedy).
    batch_size: victims decoded in lockstep. chunk: (row, candidate) pairs per head forward (memory bound).
    """

    candidates: Literal["all", "prior", "posterior", "prior+posterior"] = "prior+posterior"
    top_k: PositiveInt = 64
    prior: bool = True
    beam: PositiveInt = 1
    batch_size: PositiveInt = 8
    chunk: PositiveInt = 2048
    fit_log: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _trace: list = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.prior and self.candidates in ("prior", "prior+posterior"):
            raise FlbenchError(f"attack {self.name!r}: candidates={self.candidates!r} ranks by the prior, which "
                               "prior=false turns off; use candidates='posterior' or 'all', or prior=true")

    def check(self, knowledge: Knowledge) -> None:
        super().check(knowledge)
        if not knowledge.defense.states_likelihood():
            raise FlbenchError(f"attack {self.name!r} scores candidates by the defense's likelihood, and defense "
                               f"{knowledge.defense.name!r} does not state one (observation_log_likelihood); "
                               "pick a likelihood-free attack such as learned-inversion")

    # ------------------------------------------------------------------ fit: public weights, no training

    def _fit(self, aux_texts: list[str], knowledge: Knowledge) -> None:
        from splits.partition import build_head

        t0 = time.perf_counter()
        head = build_head(knowledge.model, knowledge.spec).eval().requires_grad_(False)
        self._embed = head.embed_tokens.weight.detach()
        # The head's blocks without the embedding, so candidates enter as embedding rows (and gradients can
        # reach the input embedding); the attacker's own copy of the public blocks.
        self._body = Part("head", knowledge.model.config, list(head.layers), 0, head.rotary_emb).eval()
        self._full = knowledge.model.eval() if self.prior else None
        self._defense = knowledge.fresh_defense()
        self._table0 = self._first_position_table()
        self.fit_log = {"seconds": round(time.perf_counter() - t0, 3), "vocab": int(self._embed.shape[0]),
                        "head_blocks": self._body.n_blocks}

    @torch.no_grad()
    def _first_position_table(self) -> torch.Tensor:
        """h_A of every vocabulary token alone at position 0 (V, d): no prefix, so it depends on the token only."""
        v = self._embed.shape[0]
        out = []
        for start in range(0, v, self.chunk):
            e = self._embed[start : start + self.chunk].unsqueeze(1)
            out.append(self._head_step(e, None, 0)[:, 0])
        return torch.cat(out)

    # ------------------------------------------------------------------ the public head, one step

    def _head_step(self, emb: torch.Tensor, cache: DynamicCache | None, t: int) -> torch.Tensor:
        """h_A at position t for input embeddings emb (R, 1, d) after the cached prefix (R rows, length t)."""
        r = emb.shape[0]
        mask = torch.ones(r, t + 1, dtype=torch.long)
        pos = torch.full((r, 1), t, dtype=torch.long)
        return self._body(emb, mask, pos, cache)

    def _repeat(self, cache: DynamicCache | None, index: torch.Tensor) -> DynamicCache | None:
        """A new cache whose rows are `cache`'s rows `index` (the prefix repeated over candidates/beams)."""
        if self._body.n_blocks == 0:
            return None
        out = self._body.new_cache()
        if cache is not None and cache.get_seq_length() > 0:
            for i, layer in enumerate(cache.layers):
                out.update(layer.keys[index], layer.values[index], i)
        return out

    # ------------------------------------------------------------------ invert

    def _invert(self, obs: Observations) -> list[list[int]]:
        self._ref_rms = self._defense.reference_rms_from_observed(torch.cat(obs.h_a)) if len(obs) else None
        self._trace = []
        self._timing = {"seconds": 0.0, "positions": 0, "scored": 0}
        out: list[list[int]] = [[] for _ in range(len(obs))]
        order = sorted(range(len(obs)), key=lambda i: -obs.lengths[i])  # similar lengths share a group
        t0 = time.perf_counter()
        for start in range(0, len(order), self.batch_size):
            group = order[start : start + self.batch_size]
            for i, ids, cands in zip(group, *self._decode_group([obs.h_a[i].float() for i in group])):
                out[i] = ids
                self._trace.append((i, cands))
        self._timing["seconds"] = time.perf_counter() - t0
        self._timing["positions"] = sum(obs.lengths)
        self._trace.sort(key=lambda x: x[0])
        return out

    def _log_lik(self, obs_rows: torch.Tensor, hid: torch.Tensor) -> torch.Tensor:
        """(R, K) log-likelihoods: observation row r (R, d) against its K candidates' h_A (R, K, d)."""
        return self._defense.observation_log_likelihood(obs_rows.unsqueeze(1), hid, reference_rms=self._ref_rms)

    def _decode_group(self, h_obs: list[torch.Tensor]):
        """Beam search over a group of victims in lockstep. Returns per victim the recovered ids and the
        candidate sets scored on the returned path (for the candidate-recall diagnostic)."""
        n = len(h_obs)
        lengths = [len(h) for h in h_obs]
        # Rows: (victim, beam) prefixes. Per row: victim index, cumulative score, tokens, candidate sets.
        victim = torch.arange(n)
        score = torch.zeros(n, dtype=torch.float64)
        tokens: list[list[int]] = [[] for _ in range(n)]
        cand_hist: list[list[torch.Tensor]] = [[] for _ in range(n)]
        head_cache = self._body.new_cache()
        prior_cache = DynamicCache(config=self._full.config) if self._full is not None else None
        log_prior = None  # (R, V) log p(· | prefix) of every row, from the full model
        done: dict[int, tuple[list[int], list[torch.Tensor]]] = {}
        for t in range(max(lengths)):
            obs_rows = torch.stack([h_obs[int(v)][t] for v in victim])  # (R, d)
            if t == 0:  # no prefix: every token's h_A is in the table; score the whole vocabulary exactly
                cand = torch.arange(self._embed.shape[0]).expand(len(victim), -1)
                ll = torch.stack([self._defense.observation_log_likelihood(o, self._table0, reference_rms=self._ref_rms)
                                  for o in obs_rows])
            else:
                cand = self._candidate_ids(obs_rows, head_cache, log_prior, t)
                ll = self._score(obs_rows, cand, head_cache, t)
            total = ll.double()
            if log_prior is not None:
                total = total + log_prior.gather(1, cand).double()
            total = total + score.unsqueeze(1)
            total = _mask_duplicates(cand, total)
            parents, picks, new_score = self._select(victim, cand, total)
            self._timing["scored"] += cand.numel()
            # advance every kept row
            victim, score = victim[parents], new_score
            tokens = [tokens[p] + [int(c)] for p, c in zip(parents.tolist(), picks.tolist())]
            cand_hist = [cand_hist[p] + [cand[p]] for p in parents.tolist()]
            head_cache = self._advance(head_cache, parents, picks, t)
            if self._full is not None:
                log_prior, prior_cache = self._prior_step(prior_cache, parents, picks, t)
            # retire victims whose observation ends here: their best row is the answer
            finished = [v for v in set(victim.tolist()) if lengths[v] == t + 1]
            if finished:
                keep = torch.ones(len(victim), dtype=torch.bool)
                for v in finished:
                    rows = (victim == v).nonzero().flatten()
                    best = int(rows[score[rows].argmax()])
                    done[v] = (tokens[best], cand_hist[best])
                    keep[rows] = False
                idx = keep.nonzero().flatten()
                victim, score = victim[idx], score[idx]
                tokens = [tokens[i] for i in idx.tolist()]
                cand_hist = [cand_hist[i] for i in idx.tolist()]
                head_cache = self._repeat(head_cache, idx)
                if self._full is not None:
                    log_prior = log_prior[idx]
                    prior_cache.batch_select_indices(idx)
                if not len(victim):
                    break
        return [done[v][0] for v in range(n)], [done[v][1] for v in range(n)]

    def _select(self, victim: torch.Tensor, cand: torch.Tensor, total: torch.Tensor):
        """The best `beam` (row, candidate) pairs of every victim: parent rows, tokens, scores."""
        parents, picks, scores = [], [], []
        k = cand.shape[1]
        for v in torch.unique(victim, sorted=True).tolist():
            rows = (victim == v).nonzero().flatten()
            flat = total[rows].flatten()
            top = flat.topk(min(self.beam, int(torch.isfinite(flat).sum()))).indices
            parents.append(rows[top // k])
            picks.append(cand[rows[top // k], top % k])
            scores.append(flat[top])
        return torch.cat(parents), torch.cat(picks), torch.cat(scores)

    def _score(self, obs_rows: torch.Tensor, cand: torch.Tensor, cache: DynamicCache | None, t: int) -> torch.Tensor:
        """Exact log-likelihood (R, K) of each row's K candidates: one head decode step over (row, candidate)
        pairs, the prefix cache repeated over the pairs, `chunk` pairs per forward."""
        r, k = cand.shape
        flat = cand.flatten()
        rows = torch.arange(r).repeat_interleave(k)
        out = torch.empty(r * k)
        for s in range(0, r * k, self.chunk):
            sl = slice(s, s + self.chunk)
            hid = self._head_step(self._embed[flat[sl]].unsqueeze(1), self._repeat(cache, rows[sl]), t)[:, 0]
            # rows of this chunk, each against its own observation
            out[sl] = -_row_dist(self._defense, obs_rows[rows[sl]], hid, self._ref_rms)
        return out.view(r, k)

    def _candidate_ids(self, obs_rows: torch.Tensor, cache, log_prior: torch.Tensor | None, t: int) -> torch.Tensor:
        v = self._embed.shape[0]
        r = obs_rows.shape[0]
        if self.candidates == "all" or self.top_k >= v:
            return torch.arange(v).expand(r, -1)
        parts = []
        if self.candidates in ("prior", "prior+posterior"):
            parts.append(log_prior.topk(self.top_k, dim=1).indices)
        if self.candidates in ("posterior", "prior+posterior"):
            parts.append(self._linearised(obs_rows, cache, log_prior, t).topk(self.top_k, dim=1).indices)
        return torch.cat(parts, dim=1)

    def _linearised(self, obs_rows: torch.Tensor, cache, log_prior: torch.Tensor | None, t: int) -> torch.Tensor:
        """(R, V) first-order posterior: log-prior(c) + ∇_e log p(o_t | h_A(x_<t, e)) · (E_c − e0) at e0 = the
        embedding of the prior's favourite token (or the mean embedding without a prior)."""
        r = obs_rows.shape[0]
        if log_prior is not None:
            e0 = self._embed[log_prior.argmax(1)]
        else:
            e0 = self._embed.mean(0).expand(r, -1)
        e0 = e0.clone().unsqueeze(1).requires_grad_(True)
        with torch.enable_grad():
            hid = self._head_step(e0, self._repeat(cache, torch.arange(r)), t)[:, 0]
            ll = self._log_lik(obs_rows, hid.unsqueeze(1)).sum()
            (g,) = torch.autograd.grad(ll, e0)
        g = g[:, 0]
        lin = g @ self._embed.T - (g * e0[:, 0].detach()).sum(-1, keepdim=True)
        return lin + log_prior if log_prior is not None else lin

    # ------------------------------------------------------------------ caches

    def _advance(self, cache, parents: torch.Tensor, picks: torch.Tensor, t: int):
        cache = self._repeat(cache, parents)
        self._head_step(self._embed[picks].unsqueeze(1), cache, t)
        return cache

    def _prior_step(self, cache: DynamicCache, parents: torch.Tensor, picks: torch.Tensor, t: int):
        if cache.get_seq_length() > 0:
            cache.batch_select_indices(parents)
        r = len(picks)
        logits = self._full(input_ids=picks.view(r, 1), attention_mask=torch.ones(r, t + 1, dtype=torch.long),
                            position_ids=torch.full((r, 1), t, dtype=torch.long), past_key_values=cache,
                            use_cache=True).logits[:, -1].float()
        return torch.log_softmax(logits, -1), cache

    # ------------------------------------------------------------------ diagnostics (scorer side)

    def diagnostics(self, true_ids: list[list[int]]) -> dict[str, Any]:
        """Candidate recall of the last `invert`: how often the true token was among the candidates scored at
        its position (on the returned path); computed by the scorer, who holds the truth."""
        if not self._trace:
            return {}
        hits = total = 0
        sizes = 0
        for (i, cands), truth in zip(self._trace, true_ids):
            for t, (c, y) in enumerate(zip(cands, truth)):
                hits += bool((c == y).any())
                total += 1
                sizes += int(torch.unique(c).numel())
        secs = self._timing["seconds"]
        return {"candidate_recall": hits / max(total, 1), "candidates_per_position": sizes / max(total, 1),
                "positions": total, "seconds_per_position": secs / max(total, 1),
                "candidate_forwards": self._timing["scored"]}


def _row_dist(defense, obs: torch.Tensor, hid: torch.Tensor, ref_rms: float | None) -> torch.Tensor:
    """−log-likelihood of each candidate row hid[j] (N, d) against its own observation obs[j] (N, d)."""
    return -defense.observation_log_likelihood(obs.unsqueeze(1), hid.unsqueeze(1), reference_rms=ref_rms)[:, 0]


def _mask_duplicates(cand: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """-inf for every repeat of a candidate within its row (pruned policies merge lists), so beams differ."""
    if cand.shape[1] < 2:
        return total
    srt, order = cand.sort(dim=1)
    dup_sorted = torch.zeros_like(srt, dtype=torch.bool)
    dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
    dup = torch.zeros_like(dup_sorted).scatter(1, order, dup_sorted)
    return total.masked_fill(dup, float("-inf"))
