"""`map-inversion`: the Bayes-optimal sequential decoder of h_A — exact public forward, the defense's
likelihood, the public model's prior.

Sources: SipIt ("Language Models are Injective and Hence Invertible", arXiv 2510.15511): a causal prefix of a
decoder determines its hidden states, so the input is recovered position by position by running the public
layers on the recovered prefix plus each candidate token and accepting the one that reproduces the observed
hidden state (candidates ordered by a gradient step on the input embedding). "Hidden No More" (arXiv
2505.18332) applies such per-position search to split-learning activations; BiSR (CCS 2024) combines learned
and optimisation-based inversion for split learning of LLMs. Under noise, scoring each candidate by the
defense's own log-likelihood (Kerckhoffs: its law and parameters are public) plus the public model's
next-token log-prior is the MAP decision per position; `beam` keeps the K best prefixes by cumulative score.

Search (per group of `batch_size` victims, decoded in lockstep: every active victim has exactly t recovered
tokens at step t, so no padding):
  1. each prefix row keeps a KV cache of the public head (and one of the full public model, for the prior);
  2. candidates for position t: the whole vocabulary ("all") or a pruned set (see `candidates`);
  3. the head runs one decode step on every (row, candidate) pair — the prefix cache repeated over the pairs —
     and the defense scores log p(o_t | h_A(x_<t, c)); the prior adds log p(c | x_<t);
  4. the best `beam` (row, candidate) pairs per victim become the new prefixes; the caches advance.
Position 0 has no prefix (the default tokenizer adds no BOS), so h_A(c) at position 0 depends on c alone:
`fit` runs the head once on the whole vocabulary at position 0 and every victim's first token is scored
exactly over all of it, whatever the candidate policy. The prior at position 0 is uniform (the public model
has no context to predict a text's first token from).

The proxy (candidates "proxy", "prior+proxy"): `fit` also runs the head once on the whole vocabulary after a
short public context (`proxy_context`), a table P(c) of each token's h_A "in some context". At step t the
exact h_A of the first candidates (the prior's top_k) gives the mean context shift s = mean(h − P); every
vocabulary token is then ranked by log p(o_t − s | P(c)) + log-prior(c) — one matrix product — and its top_k
are scored exactly. Measured on tuning text (not the victims): the true token is in the proxy's top 32 at
≥ 0.99 of positions undefended, where the prior's top 64 holds it at ~0.7 and a gradient-guided linear
ranking (SipIt-style, candidates="gradient") at ~0.5.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from transformers import DynamicCache

from attacks.base import Attack, Knowledge, Observations, register
from defenses.base import squared_distance_sum
from flbench.core.errors import FlbenchError
from flbench.core.params import NonNegativeInt, PositiveInt
from splits.parts import Part

# `expand`: a row's candidates "explain" the observation when the best log-likelihood reaches the level the
# true row reaches under the Gaussian laws the defenses state (−log p = ||noise||²/2σ² ~ χ²_d / 2, mean d/2,
# sd sqrt(d/2); the exact law is a far narrower Gaussian): more than PLAUSIBLE_Z sd below means none of them
# is the true token, so the next top_k of the ranking are scored.
PLAUSIBLE_Z = 6.0
# Beam pruning: a prefix whose cumulative log-score trails its victim's best by more than this many nats (a
# posterior ratio of e^-50) is dropped, so undefended searches do not carry wrong prefixes along.
BEAM_MARGIN = 50.0


@register("map-inversion")
@dataclass
class MAPInversion(Attack):
    """Per-position MAP search with the public head's exact forward + the defense's likelihood + the public
    prior (SipIt, arXiv 2510.15511; Hidden No More, arXiv 2505.18332).

    Assumes: the server sees h_A (after the defense and the wire's rounding) and knows the public head and
    full-model weights, the split, and the defense's law and parameters (the defense must state its
    likelihood, `BaseDefense.observation_log_likelihood`); no training and no auxiliary text.
    candidates: which tokens are scored exactly at positions ≥ 1 (position 0 always scores the whole
      vocabulary): "all" (the reference; slow), "prior" (the prior's top_k), "gradient" (top_k of the
      log-prior plus the first-order change of the log-likelihood when the input embedding moves from the
      prior's favourite to each token: SipIt's gradient guidance), "proxy" (top_k of the context-free proxy
      table, see the module doc), "prior+proxy" (the prior's top_k, then the proxy's top_k with the context
      shift measured on them; the default).
    top_k: candidates per source. prior: add the public model's next-token log-prior (MAP) or not (maximum
      likelihood). beam: prefixes kept per victim (1 = greedy). expand: at most this many more rounds of
      top_k candidates (next in the policy's ranking) for a row whose candidates do not explain the
      observation (best log-likelihood more than 6 sd below what the true token reaches under the Gaussian
      laws; SipIt's "continue until accepted"), 0 = never. fallback: a row still unexplained after them
      scores the whole vocabulary (undefended, the true token is then always found: SipIt's guarantee; each
      costs one full-vocabulary step, counted in diagnostics). proxy_context: the public text the proxy
      table is computed after. batch_size: victims decoded in lockstep. chunk: (row, candidate) pairs per
      head forward (memory bound only).
    mismatch: when the observations sit farther from every public candidate than the stated law allows (the
      victim's head carries fine-tuned adapters the attacker does not know), estimate that extra residual
      variance from position 0 (median over victims of min_c ||o_0 − h_A(c)||² / d, which holds only the noise
      and the model mismatch) and score with a Gaussian of the total variance instead of the stated law (an
      approximation: the mismatch is treated as isotropic noise). Never triggers on a public-weights victim
      (the test keeps a 1.5× margin over the law's own variance); reported in diagnostics. Under a clipping
      defense (dp-forward) the candidate is clipped first, as the stated law does, and that law is widened to
      the total variance.
    """

    candidates: Literal["all", "prior", "gradient", "proxy", "prior+proxy"] = "prior+proxy"
    top_k: PositiveInt = 32
    prior: bool = True
    beam: PositiveInt = 1
    expand: NonNegativeInt = 4
    fallback: bool = True
    proxy_context: str = "This is a short text:"
    batch_size: PositiveInt = 8
    chunk: PositiveInt = 2048
    mismatch: bool = True
    fit_log: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    combines_releases: ClassVar[bool] = True  # k releases of a position: their log-likelihoods add
    _trace: list = field(default_factory=list, init=False, repr=False, compare=False)
    # Another channel's log-evidence about the input tokens (attacks.joint_inversion): obs index i →
    # {position t: (V,) log-evidence per token}, added to the prior at those positions; None: h_A alone.
    _evidence_fn: Any = field(default=None, init=False, repr=False, compare=False)
    _mismatch_groups: Any = field(default=None, init=False, repr=False, compare=False)  # see _mismatch_variance

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.prior and self.candidates in ("prior", "prior+proxy"):
            raise FlbenchError(f"attack {self.name!r}: candidates={self.candidates!r} ranks by the prior, which "
                               "prior=false turns off; use candidates 'proxy', 'gradient' or 'all', or prior=true")
        if not self.proxy_context.strip():
            raise FlbenchError(f"attack {self.name!r}: proxy_context={self.proxy_context!r} is empty; expected a "
                               "short public text (e.g. 'This is a short text:')")

    def check(self, knowledge: Knowledge) -> None:
        super().check(knowledge)
        if not knowledge.defense.states_likelihood():
            raise FlbenchError(f"attack {self.name!r} scores candidates by the defense's likelihood, and defense "
                               f"{knowledge.defense.name!r} does not state one (observation_log_likelihood); "
                               "pick a likelihood-free attack such as learned-inversion")

    # ------------------------------------------------------------------ fit: public weights, no training

    def _fit(self, aux_texts: list[str], knowledge: Knowledge) -> None:
        t0 = time.perf_counter()
        head = knowledge.attacker_head()
        self._embed = head.embed_tokens.weight.detach()
        # The head's blocks without the embedding, so candidates enter as embedding rows (and a gradient can
        # reach the input embedding); the attacker's own copy of the public blocks.
        self._body = Part("head", knowledge.model.config, list(head.layers), 0, head.rotary_emb).eval()
        self._full = knowledge.model.eval() if self.prior else None
        self._defense = knowledge.fresh_defense()
        with torch.no_grad():
            self._table0 = self._vocab_table([])
            self._proxy = None
            if "proxy" in self.candidates:
                ctx = list(knowledge.tokenizer(self.proxy_context)["input_ids"])
                if not ctx:
                    raise FlbenchError(f"attack {self.name!r}: proxy_context={self.proxy_context!r} has no tokens")
                self._proxy = self._vocab_table(ctx)
        self.fit_log = {"seconds": round(time.perf_counter() - t0, 3), "vocab": int(self._embed.shape[0]),
                        "head_blocks": self._body.n_blocks}

    def _vocab_table(self, context: list[int]) -> torch.Tensor:
        """h_A of every vocabulary token right after `context` (V, d); with no context (position 0) it depends
        on the token alone."""
        cache = self._body.new_cache()
        if context:
            ids = torch.tensor([context])
            self._body(self._embed[ids], torch.ones_like(ids), torch.arange(len(context))[None], cache)
        out = []
        v = self._embed.shape[0]
        for start in range(0, v, self.chunk):
            e = self._embed[start : start + self.chunk].unsqueeze(1)
            rows = torch.zeros(len(e), dtype=torch.long)
            out.append(self._head_step(e, self._repeat(cache, rows), len(context))[:, 0])
        return torch.cat(out)

    # ------------------------------------------------------------------ the public head, one step

    def _head_step(self, emb: torch.Tensor, cache: DynamicCache | None, t: int) -> torch.Tensor:
        """h_A at position t (R, 1, d) for input embeddings emb (R, 1, d) after the cached prefix (R rows of t)."""
        r = emb.shape[0]
        return self._body(emb, torch.ones(r, t + 1, dtype=torch.long), torch.full((r, 1), t, dtype=torch.long),
                          cache)

    def _repeat(self, cache: DynamicCache | None, index: torch.Tensor) -> DynamicCache | None:
        """A new cache whose rows are `cache`'s rows `index` (the prefix repeated over candidates or beams)."""
        if self._body.n_blocks == 0:
            return None
        out = self._body.new_cache()
        if cache is not None and cache.get_seq_length() > 0:
            for i, layer in enumerate(cache.layers):
                out.update(layer.keys[index], layer.values[index], i)
        return out

    # ------------------------------------------------------------------ invert

    def _invert(self, obs: Observations) -> list[list[int]]:
        if not len(obs):
            return []
        self._ref_rms = self._defense.reference_rms_from_observed(torch.cat(obs.h_a).float())
        self._total_var = self._mismatch_variance(obs) if self.mismatch else None
        d, k = obs.h_a[0].shape[-1], obs.releases
        self._plausible = -(k * d + PLAUSIBLE_Z * (2 * k * d) ** 0.5) / 2  # see `expand` (χ² with k·d degrees)
        self._trace = [None] * len(obs)
        self._scored = self._fallbacks = 0
        out: list[list[int]] = [[] for _ in range(len(obs))]
        order = sorted(range(len(obs)), key=lambda i: -obs.lengths[i])  # similar lengths share a group
        t0 = time.perf_counter()
        for start in range(0, len(order), self.batch_size):
            group = order[start : start + self.batch_size]
            rows = [obs.h_a_releases[i].transpose(0, 1).float() if obs.releases > 1 else obs.h_a[i].float().unsqueeze(1)
                    for i in group]  # (T_i, k, d): the k releases of every position
            evidence = [self._evidence_fn(i) for i in group] if self._evidence_fn is not None else None
            for i, ids, cands in zip(group, *self._decode_group(rows, evidence)):
                out[i], self._trace[i] = ids, cands
        self._seconds = time.perf_counter() - t0
        return out

    def _decode_group(self, h_obs: list[torch.Tensor], evidence: list[dict[int, torch.Tensor]] | None = None
                      ) -> tuple[list[list[int]], list[list[Any]]]:
        """Beam search over a group of victims in lockstep. Returns per victim the recovered ids and, per
        position, the candidate ids scored on the returned path (None: the whole vocabulary). `evidence`: per
        victim, another channel's log-evidence {position: (V,)}, added to the prior where given."""
        n = len(h_obs)
        lengths = [len(h) for h in h_obs]
        victim = torch.arange(n)  # rows are (victim, beam) prefixes
        score = torch.zeros(n, dtype=torch.float64)
        tokens: list[list[int]] = [[] for _ in range(n)]
        hist: list[list[Any]] = [[] for _ in range(n)]
        head_cache = self._body.new_cache()
        prior_cache = DynamicCache(config=self._full.config) if self._full is not None else None
        log_prior = None  # (R, V) log p(· | prefix of each row)
        done: dict[int, tuple[list[int], list[Any]]] = {}
        for t in range(max(lengths)):
            obs_rows = torch.stack([h_obs[int(v)][t] for v in victim])  # (R, k, d): k releases per row
            lp = log_prior if t == 0 or evidence is None else _with_evidence(log_prior, evidence, victim, t)
            if t == 0:
                cand, ll = self._first_position(obs_rows)
            else:  # only each victim's leading prefix may expand its candidates (bounded cost with beams)
                lead = score == torch.full((n,), float("-inf"), dtype=score.dtype).scatter_reduce(
                    0, victim, score, "amax")[victim]
                cand, ll = self._step_candidates(obs_rows, head_cache, lp, t, lead)
            total = ll.double() + score.unsqueeze(1)
            if lp is not None:
                total = total + lp.gather(1, cand).double()
            parents, picks, score = self._select(victim, cand, _mask_duplicates(cand, total))
            victim = victim[parents]
            whole = t == 0 or self.candidates == "all"
            tokens = [tokens[p] + [int(c)] for p, c in zip(parents.tolist(), picks.tolist())]
            hist = [hist[p] + [None if whole else cand[p]] for p in parents.tolist()]
            head_cache = self._repeat(head_cache, parents)
            self._head_step(self._embed[picks].unsqueeze(1), head_cache, t)
            if self._full is not None:
                log_prior = self._prior_step(prior_cache, parents, picks, t)
            finished = sorted({v for v in victim.tolist() if lengths[v] == t + 1})
            if finished:  # retire victims whose observation ends here: their best row is the answer
                keep = torch.ones(len(victim), dtype=torch.bool)
                for v in finished:
                    rows = (victim == v).nonzero().flatten()
                    best = int(rows[score[rows].argmax()])
                    done[v] = (tokens[best], hist[best])
                    keep[rows] = False
                idx = keep.nonzero().flatten()
                if not len(idx):
                    break
                victim, score = victim[idx], score[idx]
                tokens, hist = [tokens[i] for i in idx.tolist()], [hist[i] for i in idx.tolist()]
                head_cache = self._repeat(head_cache, idx)
                if self._full is not None:
                    log_prior = log_prior[idx]
                    prior_cache.batch_select_indices(idx)
        return [done[v][0] for v in range(n)], [done[v][1] for v in range(n)]

    def _mismatch_variance(self, obs: Observations) -> float | None:
        """Total per-coordinate residual variance when position 0 shows a model mismatch (see `mismatch`), else
        None (score with the defense's own law). Position 0 depends on the token alone, so under the stated
        law the best of the whole vocabulary explains it (log-likelihood above the plausible level of
        `expand`); a mismatch is declared when the median victim's best does not.

        Traffic from several client versions (a fine-tuning run: the adapters change every step;
        `_mismatch_groups[i]` names entry i's version, e.g. its training step, which the server knows from the
        order of the traffic) is tested per version: a mismatch in any version's median widens the law for all,
        to the largest version's residual (the versions that match lose a little power under noise, none
        without it; one pooled median would miss a mismatch in a minority of the versions)."""
        first = torch.stack([h[0].float() for h in obs.h_a])  # (N, d)
        d = first.shape[1]
        best = torch.stack([self._defense.observation_log_likelihood(o, self._table0, reference_rms=self._ref_rms).max()
                            for o in first])
        groups = self._mismatch_groups if self._mismatch_groups is not None else [0] * len(obs)
        members: dict[Any, list[int]] = {}
        for i, g in enumerate(groups):
            members.setdefault(g, []).append(i)
        plausible = -(d + PLAUSIBLE_Z * (2 * d) ** 0.5) / 2
        off = [torch.tensor(ix) for ix in members.values() if float(best[ix].median()) < plausible]
        self._mismatch_seen = None
        if not off:
            return None
        resid = squared_distance_sum(first.unsqueeze(1), self._table0).min(1).values / d  # (N,)
        rms = float(first.square().mean().sqrt())
        law_sd = self._defense.noise_scale().per_coordinate_std(d, float(self._ref_rms or rms))
        worst = max(float(resid[ix].median()) for ix in off)
        total = max(worst, law_sd ** 2)
        self._mismatch_seen = {"residual_sd": worst ** 0.5, "law_sd": law_sd}
        if self._mismatch_groups is not None:
            self._mismatch_seen["versions"] = {"tested": len(members), "mismatched": len(off)}
        return total

    def _select(self, victim: torch.Tensor, cand: torch.Tensor, total: torch.Tensor):
        """The best `beam` (row, candidate) pairs of every victim: parent rows, tokens, cumulative scores."""
        parents, picks, scores = [], [], []
        k = cand.shape[1]
        for v in torch.unique(victim, sorted=True).tolist():
            rows = (victim == v).nonzero().flatten()
            flat = total[rows].flatten()
            flat = flat.masked_fill(flat < flat.max() - BEAM_MARGIN, float("-inf"))
            top = flat.topk(min(self.beam, int(torch.isfinite(flat).sum()))).indices
            parents.append(rows[top // k])
            picks.append(cand[rows[top // k], top % k])
            scores.append(flat[top])
        return torch.cat(parents), torch.cat(picks), torch.cat(scores)

    # ------------------------------------------------------------------ candidates and their exact scores

    def _log_lik(self, obs_rows: torch.Tensor, hid: torch.Tensor) -> torch.Tensor:
        """(R, K) log-likelihoods of observation rows (R, k, d) (k releases each, their log-likelihoods add)
        against candidate h_A: (R, K, d) per row, or (K, d) shared by every row."""
        if self._total_var is not None:  # the defense's law widened to the measured residual (clip first, etc.)
            return self._defense.widened_log_likelihood(obs_rows, hid, self._total_var, reference_rms=self._ref_rms)
        return self._defense.observation_log_likelihood(obs_rows, hid, reference_rms=self._ref_rms)

    def _first_position(self, obs_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Position 0: every token's exact h_A is in the position-0 table; score the whole vocabulary (per row,
        by differences: exact acceptance needs no cancellation)."""
        v = self._table0.shape[0]
        ll = torch.stack([self._log_lik(o.unsqueeze(0), self._table0)[0] for o in obs_rows])
        self._scored += ll.numel()
        return torch.arange(v).expand(len(obs_rows), -1), ll

    def _exact(self, obs_rows: torch.Tensor, cand: torch.Tensor, cache, t: int, keep: bool = False,
               rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Exact log-likelihood (F, K) of K candidates for each of F rows (all rows, or the rows `rows` of the
        cache and of obs_rows),
        and their h_A (F, K, d) if `keep`: one head decode step over the (row, candidate) pairs, the prefix
        cache repeated over the pairs, `chunk` pairs per forward."""
        f, k = cand.shape
        rows = torch.arange(f) if rows is None else rows
        flat = cand.flatten()
        pair_rows = rows.repeat_interleave(k)  # cache / observation row of every pair
        hid = torch.empty(f * k, self._embed.shape[1]) if keep else None
        ll = torch.empty(f * k)
        for s in range(0, f * k, self.chunk):
            sl = slice(s, s + self.chunk)
            h = self._head_step(self._embed[flat[sl]].unsqueeze(1), self._repeat(cache, pair_rows[sl]), t)
            if keep:
                hid[sl] = h[:, 0]
            ll[sl] = self._log_lik(obs_rows[pair_rows[sl]], h)[:, 0]  # each pair against its own row
        self._scored += f * k
        return ll.view(f, k), hid.view(f, k, -1) if keep else None

    def _step_candidates(self, obs_rows: torch.Tensor, cache, log_prior, t: int,
                         lead: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate ids (R, K) for position t and their exact log-likelihoods (R, K) (-inf: padding). Rows
        marked in `lead` (R,) may get expansion rounds and the fallback."""
        v = self._embed.shape[0]
        r = len(obs_rows)
        policy = self.candidates
        if policy == "all" or self.top_k >= v:
            every = torch.arange(v).expand(r, -1)
            return every, self._exact(obs_rows, every, cache, t)[0]
        prior = log_prior if log_prior is not None else torch.zeros(r, v)
        if policy == "prior+proxy":  # the context shift measured on the prior's candidates ranks the proxy
            cand = prior.topk(self.top_k, dim=1).indices
            ll, hid = self._exact(obs_rows, cand, cache, t, keep=True)
            shift = (hid - self._proxy[cand]).mean(1)  # (R, d)
            ranking = self._log_lik(obs_rows - shift.unsqueeze(1), self._proxy) + prior
        else:
            ranking = {"prior": lambda: prior.clone(),
                       "proxy": lambda: self._log_lik(obs_rows, self._proxy) + prior,
                       "gradient": lambda: self._linearised(obs_rows, cache, log_prior, t) + prior}[policy]()
            cand, ll = torch.empty(r, 0, dtype=torch.long), torch.empty(r, 0)
        need = torch.arange(r)  # rows that get the next top_k of their ranking: all, then the unexplained
        for _ in range(1 + self.expand):
            ranking.scatter_(1, cand, float("-inf"))  # never score a token twice
            new = ranking[need].topk(self.top_k, dim=1).indices
            new_ll = self._exact(obs_rows, new, cache, t, rows=need)[0]
            if len(need) < r:  # rows that were not expanded repeat their first candidate (masked as duplicates)
                pad_c, pad_l = cand[:, :1].repeat(1, self.top_k), torch.full((r, self.top_k), float("-inf"))
                pad_c[need], pad_l[need] = new, new_ll
                new, new_ll = pad_c, pad_l
            cand, ll = torch.cat([cand, new], 1), torch.cat([ll, new_ll], 1)
            need = ((ll.max(1).values < self._plausible) & lead).nonzero().flatten()
            if not len(need):
                break
        if len(need) and self.fallback:  # still unexplained: the whole vocabulary for those rows
            every = torch.arange(v).expand(len(need), -1)
            pad_c, pad_l = cand[:, :1].repeat(1, v), torch.full((r, v), float("-inf"))
            pad_c[need], pad_l[need] = every, self._exact(obs_rows, every, cache, t, rows=need)[0]
            cand, ll = torch.cat([cand, pad_c], 1), torch.cat([ll, pad_l], 1)
            self._fallbacks += len(need)
        return cand, ll

    def _linearised(self, obs_rows: torch.Tensor, cache, log_prior, t: int) -> torch.Tensor:
        """(R, V) first-order change of the log-likelihood when the input embedding at t moves from e0 (the
        prior's favourite token, or the mean embedding) to each vocabulary row: ∇_e log p(o | h_A(e)) · (E_c − e0)."""
        r = obs_rows.shape[0]
        e0 = self._embed[log_prior.argmax(1)] if log_prior is not None else self._embed.mean(0).expand(r, -1)
        e0 = e0.clone().unsqueeze(1).requires_grad_(True)
        with torch.enable_grad():
            hid = self._head_step(e0, self._repeat(cache, torch.arange(r)), t)
            (g,) = torch.autograd.grad(self._log_lik(obs_rows, hid).sum(), e0)
        g = g[:, 0]
        return g @ self._embed.T - (g * e0[:, 0].detach()).sum(-1, keepdim=True)

    def _prior_step(self, cache: DynamicCache, parents: torch.Tensor, picks: torch.Tensor, t: int) -> torch.Tensor:
        """Advance the full public model's cache with the kept rows' new tokens; (R, V) next-token log-prior."""
        if cache.get_seq_length() > 0:
            cache.batch_select_indices(parents)
        r = len(picks)
        logits = self._full(input_ids=picks.view(r, 1), attention_mask=torch.ones(r, t + 1, dtype=torch.long),
                            position_ids=torch.full((r, 1), t, dtype=torch.long), cache=cache,
                            use_cache=True).logits[:, -1].float()
        return torch.log_softmax(logits, -1)

    # ------------------------------------------------------------------ diagnostics (scorer side)

    def diagnostics(self, true_ids: list[list[int]]) -> dict[str, Any]:
        """Candidate recall of the last `invert`: the fraction of positions whose true token was among the
        candidates scored there (on the returned path; position 0 and candidates="all" score the whole
        vocabulary, so recall 1 there), so a reader sees when pruning, not the defense, limited the attack.
        Computed by the scorer, who holds the truth; the attack never sees it."""
        if not self._trace:
            return {}
        hits = total = pruned = sizes = 0
        for cands, truth in zip(self._trace, true_ids):
            for c, y in zip(cands, truth):
                total += 1
                if c is None:
                    hits += 1
                    continue
                hits += bool((c == y).any())
                pruned += 1
                sizes += int(torch.unique(c).numel())
        v = int(self._embed.shape[0])
        return {"candidate_recall": hits / max(total, 1),
                "candidates_per_position": sizes / pruned if pruned else v,
                "positions": total, "pruned_positions": pruned,
                "seconds_per_position": self._seconds / max(total, 1), "candidate_forwards": self._scored,
                "full_vocabulary_fallbacks": self._fallbacks,
                "model_mismatch": (None if self._total_var is None
                                   else {**self._mismatch_seen, "total_sd": self._total_var ** 0.5})}


def _with_evidence(log_prior: torch.Tensor | None, evidence: list[dict[int, torch.Tensor]], victim: torch.Tensor,
                   t: int) -> torch.Tensor | None:
    """The log-prior (R, V) of the rows at position t plus another channel's log-evidence for their victims
    (`evidence[v][t]`, zero where a victim has none); unchanged when no row's victim has evidence at t."""
    if not any(t in evidence[int(v)] for v in victim):
        return log_prior
    some = next(evidence[int(v)][t] for v in victim if t in evidence[int(v)])
    ev = torch.stack([evidence[int(v)].get(t, torch.zeros_like(some)).float() for v in victim])
    return ev if log_prior is None else log_prior + ev


def _mask_duplicates(cand: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """-inf for every repeat of a candidate within its row but its best-scored one (merged or padded lists may
    repeat a token), so beams differ."""
    if cand.shape[1] < 2:
        return total
    by_score = total.argsort(dim=1, descending=True)
    c = cand.gather(1, by_score)
    by_id = c.argsort(dim=1, stable=True)  # ties keep the score order: the best of each id comes first
    srt = c.gather(1, by_id)
    dup = torch.zeros_like(srt, dtype=torch.bool)
    dup[:, 1:] = srt[:, 1:] == srt[:, :-1]
    order = by_score.gather(1, by_id)  # column of `cand` behind each sorted entry
    return total.masked_fill(torch.zeros_like(dup).scatter(1, order, dup), float("-inf"))
