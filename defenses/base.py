"""What every defense shares: the registry, the base class and its self-description, generators, SNR statistics.

A defense sits on an outgoing edge of a client (see `splits.parties.Defense`; `BaseDefense.edges` says which):
it is called as `defense(x, generator)` with the tensor about to be sent — the head's output hidden states h_A
(B, T, d), or for a gradient-edge defense the tail's dL/dh_B (B, T, d) — and returns the tensor that is sent
to the server. Training backpropagates through it, so a defense uses out-of-place differentiable ops
and never modifies `h` (the client's own graph keeps the clean `h`).

Defenses draw noise only from an explicit `torch.Generator` (opacus' `noise_generator` / `secure_mode`
habit), never from the global RNG. Benchmarks pass `make_generator(seed, secure=False)`; deployments pass
`make_generator(None, secure=True)`, seeded from OS entropy. If a caller passes no generator, the defense
falls back to its own OS-seeded generator and counts those calls in `stats()["unseeded_calls"]`, so a run
record shows that its noise draws were not reproducible.
"""
from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from flbench.core.errors import FlbenchError
from flbench.core.params import check_params, expected, field_info, is_required, param_fields
from flbench.core.registry import Registry

if TYPE_CHECKING:
    import torch

# torch is imported where tensors are touched, not at import time: the CLI builds its defense options from
# these classes, and `flbench --help` / `flbench leaderboard` should not pay for loading torch.

defenses: Registry[type["BaseDefense"]] = Registry("defense")

# Units of a defense's noise scale (NoiseScale.unit).
ABSOLUTE = "absolute"
RELATIVE_RMS = "relative×RMS"
# dx-privacy's 1/η: noise density ∝ exp(−η||z||) per row of d coordinates, per-coordinate std √(d+1)/η.
INVERSE_ETA = "1/η (per-coordinate std √(d+1)/η)"
NOISE_UNITS = (ABSOLUTE, RELATIVE_RMS, INVERSE_ETA)

# The outgoing edges a defense may sit on (BaseDefense.edges).
EDGE_H_A = "h_a"  # the client's forward hidden states h_A (head → server)
EDGE_GRAD_B = "grad_b"  # the client tail's gradient dL/dh_B (tail → server)
EDGES = (EDGE_H_A, EDGE_GRAD_B)


def register(name: str):
    """Class decorator: register a defense class under `name` (a duplicate name raises) and set `cls.name`."""

    def deco(cls: type[BaseDefense]) -> type[BaseDefense]:
        cls.name = name
        return defenses.register(name)(cls)

    return deco


def make_defense(name: str, **params: Any) -> "BaseDefense":
    """Build a registered defense by name. Unknown names, unknown or missing parameters, and values of the
    wrong type or out of range raise a one-line FlbenchError naming the parameter and what is accepted."""
    cls = defenses.get(name)
    return cls(**check_params(f"defense {name!r}", cls, params))


def make_generator(seed: int | None = None, secure: bool = False, device: str | torch.device = "cpu"
                   ) -> torch.Generator:
    """A torch.Generator for a defense's noise.

    `seed` (0 <= seed < 2**64): reproducible draws for benchmarks. `secure=True` (with `seed=None`): seeded
    with 64 bits from the OS CSPRNG (`secrets`, i.e. os.urandom), so nobody can replay the draws from a
    published seed. Note the generator itself (Mersenne Twister on CPU) is not a CSPRNG (opacus' secure mode
    uses torchcsprng for that); secure seeding only removes a known or guessable seed.
    """
    if secure:
        if seed is not None:
            raise FlbenchError(f"generator: seed={seed!r} conflicts with secure=True; "
                               "pass a seed (reproducible benchmark) or secure=True (OS entropy), not both")
        seed = secrets.randbits(64)
    elif seed is None:
        raise FlbenchError("generator: seed=None with secure=False; "
                           "pass an integer seed in [0, 2**64) or secure=True (OS entropy)")
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise FlbenchError(f"generator: seed={seed!r} is not an integer in [0, 2**64)")
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def draw_noise(like: torch.Tensor, std: float | torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise N(0, std^2) with the shape, dtype and device of `like`, from `generator` only."""
    import torch

    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype) * std


def _work_dtype(*ts: torch.Tensor) -> torch.dtype:
    import torch

    out = torch.float32
    for t in ts:
        out = torch.promote_types(out, t.dtype)
    return out


def check_observation_shapes(observed: torch.Tensor, candidates: torch.Tensor) -> None:
    """The shapes `observation_log_likelihood` accepts (see `squared_distance_sum`), else a one-line error."""
    if not ((observed.ndim in (1, 2) and candidates.ndim == 2) or (observed.ndim == 3 and candidates.ndim in (2, 3))):
        raise FlbenchError(f"observation likelihood: observed {tuple(observed.shape)} and candidates "
                           f"{tuple(candidates.shape)}: expected (d,) or (n, d) with (K, d), or (B, n, d) with "
                           "(B, K, d) or (K, d)")
    if observed.shape[-1] != candidates.shape[-1] or (candidates.ndim == 3 and observed.shape[0] != candidates.shape[0]):
        raise FlbenchError(f"observation likelihood: observed {tuple(observed.shape)} does not match candidates "
                           f"{tuple(candidates.shape)}")


def squared_distance_sum(observed: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Σ_i ||o_i − c||² over the n releases o_i of a position, for each candidate c.

    observed (d,) or (n, d) with candidates (K, d) → (K,); batched: observed (B, n, d) with candidates
    (B, K, d) → (B, K) (row b against its own K candidates) or with shared candidates (K, d) → (B, K) (every
    row against the same K, e.g. a whole vocabulary). Uses Σ||o_i − c||² = Σ||o_i − ō||² + n||ō − c||²; the
    per-row forms take differences (exact: no cancellation when an observation equals a candidate); the
    shared form expands ||ō − c||² = ||ō||² − 2ō·c + ||c||² into one matrix product (fp32 rounding
    ~1e-7·||ō||², fine for ranking a vocabulary, not for exact-match acceptance).
    """
    check_observation_shapes(observed, candidates)
    work = _work_dtype(observed, candidates)
    single = observed.ndim < 3
    o = observed.reshape(1, -1, observed.shape[-1]).to(work) if single else observed.to(work)
    c = candidates.to(work)
    n = o.shape[1]
    mean = o.mean(1, keepdim=True)  # (B, 1, d)
    spread = (o - mean).square().sum((1, 2)).unsqueeze(1)  # (B, 1)
    if c.ndim == 3 or single:
        out = spread + n * (c - mean).square().sum(-1)  # (B, K) by differences
    else:  # shared candidates: one matrix product
        m = mean[:, 0]
        gram = m.square().sum(-1, keepdim=True) - 2.0 * m @ c.T + c.square().sum(-1)
        out = spread + n * gram.clamp_min(0.0)
    return out[0] if single else out


# An exact observation (no noise) is a point mass at the clean row; the attacker's recomputation of that row
# differs from the client's only by float rounding and the wire dtype's (bf16 rounds each coordinate by up to
# 2^-8 of itself, RMS ≈ 0.0023 of the row's RMS), so it is scored as a Gaussian of this relative width: the true
# row scores ≈ 0 (≈ −0.16 per coordinate through a bf16 wire) and any other row −||o − c||² / (2τ²), far below
# any difference of log-priors — SipIt's exact acceptance (arXiv 2510.15511).
EXACT_RELATIVE_TOLERANCE = 4e-3


def gaussian_log_likelihood(observed: torch.Tensor, candidates: torch.Tensor, sigma: float) -> torch.Tensor:
    """−Σ_i ||o_i − c||² / (2σ²): i.i.d. N(0, σ²) noise on every coordinate, up to a constant (shapes as in
    `squared_distance_sum`). σ = 0 (no noise) is the exact law: σ is replaced by τ = EXACT_RELATIVE_TOLERANCE ×
    RMS of the observed row(s), the numerical width of "equal"."""
    dist = squared_distance_sum(observed, candidates)
    if sigma > 0:
        return -dist / (2.0 * sigma * sigma)
    o = observed.reshape(1, -1, observed.shape[-1]) if observed.ndim < 3 else observed
    tau_sq = (EXACT_RELATIVE_TOLERANCE**2) * o.to(dist.dtype).square().mean((1, 2)).clamp_min(1e-30)  # (B,)
    return -dist / (2.0 * (tau_sq[0] if observed.ndim < 3 else tau_sq.unsqueeze(1)))


@dataclass
class NoiseStats:
    """Running sums over every coordinate a defense has released, for SNR in both conventions.

    - `snr_rms` = RMS(signal) / RMS(sigma_effective): flbench's convention (std-based).
    - `snr_mean_abs` = mean|signal| / mean|noise|: the FL-LLaMA paper's convention (arXiv 2505.15683 counts
      the noise "scale" as mean|noise|, i.e. sigma * sqrt(2/pi) for Gaussian noise).
    - `snr_token_median` = median over released rows t of ||h_t|| / (σ_eff·√d), i.e. each row's own RMS over
      the noise std of its call: the SNR of the typical token, which a few outlying rows cannot move (the
      attention-sink row at position 0 can carry most of a short sequence's energy and so dominates
      `snr_rms`; Xiao et al., arXiv 2309.17453). Rows that are all zero (padding a caller zeroed) are left
      out, and so are rows a caller marks as padding with `add(..., mask=)`. The split runtime's head zeroes
      its padded rows before the defense sees the (B, T, d) batch, so there padding is left out too
      (tests/defenses/test_calibration.py).
      Kept exactly: 4 bytes per row released.
    The signal is what the noise is added to: the clean h, or for clipping defenses the CLIPPED h (the
    unclipped norm is not what the receiver could recover; using it overstated dp-forward's SNR).
    Zero noise gives infinite SNR (`math.inf`). The sums include padded positions (they are noised too).
    """

    calls: int = 0
    vectors: int = 0
    coords: int = 0
    sum_sq_signal: float = 0.0
    sum_abs_signal: float = 0.0
    sum_var_nominal: float = 0.0
    sum_sq_noise: float = 0.0
    sum_abs_noise: float = 0.0
    row_snr: list = field(default_factory=list, repr=False, compare=False)  # float32 tensors: each real row's RMS / σ_eff

    def add(self, signal: torch.Tensor, noise: torch.Tensor | None, sigma: float,
            mask: torch.Tensor | None = None) -> None:
        """One call: `signal` (..., d) the clean tensor, `noise` what was added (None: nothing), `sigma` the
        per-coordinate noise std of this call; `mask` (the leading shape of `signal`, nonzero = a real row)
        keeps padded rows out of `snr_token_median` (the sums above count every coordinate released)."""
        s = signal.detach().double()  # detached: no graph, so no torch.no_grad() needed
        self._add_rows(s, sigma, mask)
        n = s.numel()
        self.calls += 1
        self.vectors += n // s.shape[-1] if s.ndim else 1
        self.coords += n
        self.sum_sq_signal += float(s.square().sum())
        self.sum_abs_signal += float(s.abs().sum())
        self.sum_var_nominal += sigma * sigma * n
        if noise is not None:
            e = noise.detach().double()
            self.sum_sq_noise += float(e.square().sum())
            self.sum_abs_noise += float(e.abs().sum())

    def as_dict(self) -> dict[str, Any]:
        n = max(self.coords, 1)
        sigma = math.sqrt(self.sum_var_nominal / n)
        signal_rms = math.sqrt(self.sum_sq_signal / n)
        return {
            "calls": self.calls,
            "vectors": self.vectors,
            "coords": self.coords,
            "signal_rms": signal_rms,
            "signal_mean_abs": self.sum_abs_signal / n,
            "sigma_effective_rms": sigma,
            "noise_rms_measured": math.sqrt(self.sum_sq_noise / n),
            "noise_mean_abs_measured": self.sum_abs_noise / n,
            "snr_rms": _ratio(signal_rms, sigma),
            "snr_mean_abs": _ratio(self.sum_abs_signal, self.sum_abs_noise),
            "snr_token_median": self.snr_token_median(),
        }

    def _add_rows(self, s: torch.Tensor, sigma: float, mask: torch.Tensor | None) -> None:
        import torch

        if s.ndim == 0 or s.shape[-1] == 0:
            return
        rms = s.square().mean(-1)  # (...,) each row's mean square
        keep = rms > 0
        if mask is not None:
            keep = keep & mask.to(device=keep.device).reshape(keep.shape).bool()
        rms = rms[keep].sqrt()
        ratio = rms / sigma if sigma > 0 else torch.full_like(rms, math.inf)
        self.row_snr.append(ratio.float().cpu())

    def snr_token_median(self) -> float | None:
        """Median over the released real rows of ||h_t|| / (σ_eff·√d) (inf without noise); None before any row."""
        import numpy as np

        rows = [r.numpy() for r in self.row_snr if r.numel()]
        return float(np.median(np.concatenate(rows).astype(np.float64))) if rows else None


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return math.inf if a > 0 else math.nan


@dataclass(frozen=True)
class NoiseScale:
    """How much noise a defense adds to each coordinate of what it sends, for plots and tables.

    `value`: the scale in `unit` (0 = none). `unit`: ABSOLUTE (σ, the standard deviation per coordinate, in the
    units of the tensor sent; dp-forward: z·C), RELATIVE_RMS (σ as a multiple of the clean tensor's RMS,
    measured per call) or INVERSE_ETA (dx-privacy's 1/η; the per-coordinate std is √(d+1)/η, which depends on
    the row width d: see `per_coordinate_std`).
    """

    value: float
    unit: str = ABSOLUTE

    @property
    def relative(self) -> bool:
        return self.unit == RELATIVE_RMS

    def per_coordinate_std(self, dim: int, signal_rms: float = 1.0) -> float:
        """The noise std per coordinate for rows of `dim` coordinates whose clean RMS is `signal_rms`."""
        if self.unit == ABSOLUTE:
            return self.value
        if self.unit == RELATIVE_RMS:
            return self.value * signal_rms
        if self.unit == INVERSE_ETA:
            return self.value * math.sqrt(dim + 1)
        raise FlbenchError(f"noise scale unit {self.unit!r} is not known; expected one of {', '.join(NOISE_UNITS)}")

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "unit": self.unit}


@dataclass(frozen=True)
class CliFlag:
    """One command-line flag a defense declares on a parameter: `field(metadata={"flag": ..., "help": ...})`.

    `switch`: a boolean parameter, given as a bare flag (`--noise-relative`). `selects`: giving this flag
    without `--defense` selects this defense (`--noise-sigma 0.5` alone means gaussian). `expected`: what the
    parameter accepts, in words.
    """

    flag: str
    param: str
    help: str
    annotation: Any
    switch: bool
    required: bool
    selects: bool
    default: Any
    expected: str


@dataclass
class BaseDefense:
    """Base of all defenses: a small dataclass whose init fields are its printable, validated parameters.

    Subclasses implement `_apply(h, generator) -> tensor` and the self-description the harness asks for
    (opacus' `IAccountant` habit: the engine asks, never names a concrete defense):

    - `family` (class attribute): "none", "additive-noise", "dp", ...; the leaderboard's undefended reference
      is the "none" family.
    - `edges` (class attribute): the outgoing edges it may sit on ("h_a" by default, "grad_b").
    - `noise_scale() -> NoiseScale`: σ and its unit, for plots and tables.
    - `accounting(releases) -> dict | None`: (ε, δ) and the privacy unit after `releases` releases of each
      unit, or None when the defense gives no formal guarantee.
    - parameters: annotated dataclass fields (see `flbench.core.params`), each with
      `metadata={"flag": "--cli-flag", "help": "..."}` so the CLI builds its options from them.
    """

    name: ClassVar[str] = "?"
    family: ClassVar[str] = "?"
    # Which outgoing edges this defense may sit on: EDGE_H_A ("h_a", the client's forward hidden states) and/or
    # EDGE_GRAD_B ("grad_b", the tail's dL/dh_B). The runtime places a defense only on an edge listed here.
    edges: ClassVar[tuple[str, ...]] = (EDGE_H_A,)
    _stats: NoiseStats = field(default_factory=NoiseStats, init=False, repr=False, compare=False)
    _fallback: Any = field(default=None, init=False, repr=False, compare=False)  # torch.Generator | None
    _unseeded_calls: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The one validator (also for direct construction, e.g. the attacker's copy of the defense).
        for k, v in check_params(f"defense {self.name!r}", type(self), self.params()).items():
            setattr(self, k, v)

    def __call__(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is None:
            if self._fallback is None:
                self._fallback = make_generator(None, secure=True, device=h.device)
            generator = self._fallback
            self._unseeded_calls += 1
        return self._apply(h, generator)

    def _apply(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ self-description

    def noise_scale(self) -> NoiseScale:
        """The scale of the noise this defense adds (σ per coordinate, or 1/η), with its unit (NOISE_UNITS)."""
        raise NotImplementedError(f"defense {self.name!r} does not say its noise scale")

    def accounting(self, releases: int = 1) -> dict[str, Any] | None:
        """Formal privacy accounting after each privacy unit was released `releases` times:
        {"epsilon", "delta", "unit" (what neighbouring inputs differ in), "releases", "accountant"},
        or None when the defense gives no formal guarantee."""
        return None

    def record_block(self, releases: int = 1) -> dict[str, Any]:
        """The defense block of a run record, before measurements (the runner adds "snr" & co.):
        name, params, family, edges, noise_sigma, noise_unit, relative, and the accounting after `releases`
        releases of each privacy unit: epsilon, delta, privacy_unit, releases, accountant (None without one)."""
        scale = self.noise_scale()
        acc = self.accounting(releases) or {}
        return {"name": self.name, "params": self.params(), "family": self.family, "edges": list(self.edges),
                "noise_sigma": scale.value, "noise_unit": scale.unit, "relative": scale.relative,
                "epsilon": acc.get("epsilon"), "delta": acc.get("delta"), "privacy_unit": acc.get("unit"),
                "releases": acc.get("releases"), "accountant": acc.get("accountant")}

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring (what `flbench ls defenses` prints)."""
        doc = (cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""

    @classmethod
    def cli_flags(cls) -> list[CliFlag]:
        """The command-line flags this defense's parameters declare (field metadata "flag", "help",
        optionally "selects": True), in declaration order."""
        out = []
        for f in param_fields(cls):
            if "flag" not in f.metadata:
                continue
            info = field_info(cls, f.name)
            out.append(CliFlag(f.metadata["flag"], f.name, f.metadata.get("help", ""), info.annotation,
                               info.annotation is bool, is_required(f), bool(f.metadata.get("selects")),
                               None if is_required(f) else f.default, expected(info)))
        return out

    # ------------------------------------------------------------------ the law, for the attacker (Kerckhoffs)

    def observation_log_likelihood(self, observed: torch.Tensor, candidates: torch.Tensor, *,
                                   reference_rms: float | None = None) -> torch.Tensor:
        """log p(observed | the clean h_A row was `candidate`), for each candidate, up to an additive constant
        that does not depend on the candidate: the defense's law as the threat model grants it (public
        mechanism and parameters, unknown draws). Attacks that decode by likelihood ask this, never a name.

        observed: (d,) one release of a position, or (n, d) n independent releases of it (their
        log-likelihoods add); batched: (B, n, d) with candidates (B, K, d) (each row its own) or (K, d)
        (shared by all rows) → (B, K). candidates: (K, d) clean hidden states the client may have computed.
        reference_rms: the clean hidden states' RMS, for laws whose scale is relative to it (the attacker
        estimates it with `reference_rms_from_observed`). Computed in at least fp32.
        A defense that does not state its law keeps this default, which raises (see `states_likelihood`).
        """
        raise FlbenchError(f"defense {self.name!r} does not state the likelihood of what it sends "
                           "(observation_log_likelihood); likelihood-based attacks cannot run against it")

    def widened_log_likelihood(self, observed: torch.Tensor, candidates: torch.Tensor, total_var: float, *,
                               reference_rms: float | None = None) -> torch.Tensor:
        """log p(observed | candidate) (shapes as `observation_log_likelihood`) when the attacker's model of
        the client is off by an unknown residual (e.g. fine-tuned adapters it does not have), modelled as
        isotropic Gaussian: the law's noise widened to `total_var` per coordinate (the law's own variance plus
        the measured residual; see map-inversion's `mismatch`). Default: the candidate is the mean,
        −Σ||o − c||² / (2 total_var). A defense whose law transforms the candidate before adding noise
        overrides this to apply that transform first (clipping: `ClippedGaussian`)."""
        if not total_var > 0:
            raise FlbenchError(f"widened likelihood: total_var={total_var!r}; expected a positive variance")
        return -squared_distance_sum(observed, candidates) / (2.0 * total_var)

    @classmethod
    def states_likelihood(cls) -> bool:
        """True when this defense implements `observation_log_likelihood`."""
        return cls.observation_log_likelihood is not BaseDefense.observation_log_likelihood

    def reference_rms_from_observed(self, observed: torch.Tensor) -> float | None:
        """The attacker's estimate of the clean hidden states' RMS from observed rows (N, d), for laws whose
        scale is relative to it; None when the law does not depend on it."""
        return None

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in param_fields(self)}

    def describe(self) -> dict[str, Any]:
        """What a run record stores about this defense: name, parameters, family, noise scale, accounting
        (for one release), what it protects."""
        return {"name": self.name, "class": type(self).__name__, "params": self.params(), "repr": repr(self),
                "family": self.family, "edges": list(self.edges), "noise_scale": self.noise_scale().as_dict(),
                "accounting": self.accounting(1)}

    def stats(self) -> dict[str, Any]:
        """Running statistics over every call since construction (or `reset_stats()`)."""
        return {**self._stats.as_dict(), "unseeded_calls": self._unseeded_calls}

    def reset_stats(self) -> None:
        self._stats = NoiseStats()
        self._unseeded_calls = 0
