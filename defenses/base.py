"""What every defense shares: the registry, the base class, generators, parameter checks and SNR statistics.

A defense sits on the client's outgoing edge (see `splits.parties.Defense`): it is called as
`defense(h, generator)` with the head's output hidden states `h` (B, T, d) and returns the tensor that is
sent to the server. Training backpropagates through it, so a defense uses out-of-place differentiable ops
and never modifies `h` (the client's own graph keeps the clean `h`).

Defenses draw noise only from an explicit `torch.Generator` (opacus' `noise_generator` / `secure_mode`
habit), never from the global RNG. Benchmarks pass `make_generator(seed, secure=False)`; deployments pass
`make_generator(None, secure=True)`, seeded from OS entropy. If a caller passes no generator, the defense
falls back to its own OS-seeded generator and counts those calls in `stats()["unseeded_calls"]`, so a run
record shows that its noise draws were not reproducible.
"""
from __future__ import annotations

import dataclasses
import math
import secrets
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from flbench.core.errors import FlbenchError
from flbench.core.registry import Registry

defenses: Registry[type["BaseDefense"]] = Registry("defense")


def register(name: str):
    """Class decorator: register a defense class under `name` (a duplicate name raises) and set `cls.name`."""

    def deco(cls: type[BaseDefense]) -> type[BaseDefense]:
        cls.name = name
        return defenses.register(name)(cls)

    return deco


def make_defense(name: str, **params: Any) -> "BaseDefense":
    """Build a registered defense by name; unknown names or parameters raise FlbenchError."""
    cls = defenses.get(name)
    accepted = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise FlbenchError(f"defense {name!r} takes no parameter {unknown[0]!r}; "
                           f"accepted: {', '.join(accepted) or '(none)'}")
    return cls(**params)


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
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def check_number(owner: str, name: str, value: Any, lo: float, hi: float = math.inf, *,
                 lo_open: bool = False, hi_open: bool = True) -> float:
    """Return `value` as a float if it is a finite real number in the interval, else raise FlbenchError."""
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        raise FlbenchError(f"{owner}: {name}={value!r} is out of range; accepted: a finite number in {interval}")
    return float(value)


def draw_noise(like: torch.Tensor, std: float | torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise N(0, std^2) with the shape, dtype and device of `like`, from `generator` only."""
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype) * std


@dataclass
class NoiseStats:
    """Running sums over every coordinate a defense has released, for SNR in both conventions.

    - `snr_rms` = RMS(clean h) / RMS(sigma_effective): flbench's convention (std-based).
    - `snr_mean_abs` = mean|h| / mean|noise|: the FL-LLaMA paper's convention (arXiv 2505.15683 counts the
      noise "scale" as mean|noise|, i.e. sigma * sqrt(2/pi) for Gaussian noise).
    Zero noise gives infinite SNR (`math.inf`). Padded positions are included (they are noised too).
    """

    calls: int = 0
    vectors: int = 0
    coords: int = 0
    sum_sq_signal: float = 0.0
    sum_abs_signal: float = 0.0
    sum_var_nominal: float = 0.0
    sum_sq_noise: float = 0.0
    sum_abs_noise: float = 0.0

    @torch.no_grad()
    def add(self, signal: torch.Tensor, noise: torch.Tensor | None, sigma: float) -> None:
        s = signal.detach().double()
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
        }


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return math.inf if a > 0 else math.nan


@dataclass
class BaseDefense:
    """Base of all defenses: a small dataclass whose init fields are its printable parameters.

    Subclasses implement `_apply(h, generator) -> tensor` and may extend `describe()` / `stats()`.
    """

    name: ClassVar[str] = "?"
    _stats: NoiseStats = field(default_factory=NoiseStats, init=False, repr=False, compare=False)
    _fallback: torch.Generator | None = field(default=None, init=False, repr=False, compare=False)
    _unseeded_calls: int = field(default=0, init=False, repr=False, compare=False)

    def __call__(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is None:
            if self._fallback is None:
                self._fallback = make_generator(None, secure=True, device=h.device)
            generator = self._fallback
            self._unseeded_calls += 1
        return self._apply(h, generator)

    def _apply(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    def describe(self) -> dict[str, Any]:
        """What a run record stores about this defense (name, parameters, what it protects)."""
        return {"name": self.name, "class": type(self).__name__, "params": self.params(), "repr": repr(self)}

    def stats(self) -> dict[str, Any]:
        """Running statistics over every call since construction (or `reset_stats()`)."""
        return {**self._stats.as_dict(), "unseeded_calls": self._unseeded_calls}

    def reset_stats(self) -> None:
        self._stats = NoiseStats()
        self._unseeded_calls = 0
