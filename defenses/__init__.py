"""Defenses on the client's outgoing edges (h_A; the gradient dL/dh_B), registered by name.

    from defenses import defenses, make_defense, make_generator
    d = make_defense("gaussian", sigma=0.5)
    sent = d(h_A, make_generator(seed=0, secure=False))
    d.family, d.noise_scale(), d.accounting(releases=1), d.record_block()

Adding a defense takes one new file `defenses/<name>.py` and one import line below; nothing in the CLI,
leaderboard, plots or runner names a defense. The file declares:

    @register("my-defense")                 # the registry name (--defense my-defense, records, leaderboard)
    @dataclass
    class MyDefense(BaseDefense):
        \"\"\"One-line summary (shown by `flbench ls defenses`), the paper it follows, what it assumes.\"\"\"

        family = "additive-noise"           # "none" | "additive-noise" | "dp" | "metric-dp" | "training" | a new family
        edges = ("h_a",)                    # the default; ("grad_b",) for a defense on the gradient dL/dh_B
        # parameters: typed, validated by flbench.core.params (pydantic, strict); a field without a default
        # is required. metadata "flag" makes it a CLI option (reuse an existing flag if it means the same
        # thing), "help" explains it, "selects": True lets the flag alone select this defense.
        scale: NonNegativeFloat = field(default=0.0, metadata={"flag": "--noise-sigma", "help": "..."})

        def _apply(self, h, generator):     # out of place, differentiable; noise only from `generator`;
            ...                             # call self._stats.add(h, noise, sigma) for the SNR statistics
        def noise_scale(self) -> NoiseScale:    # its scale and unit (ABSOLUTE, RELATIVE_RMS or INVERSE_ETA)
            ...
        def accounting(self, releases=1):   # only with a formal guarantee: {"epsilon", "delta", "unit",
            ...                             # "releases", "accountant"}; the default None means none. Gaussian
                                            # mechanisms use defenses.accounting (one accountant for all)

and adds its entries to tests/defenses/conftest.py (EXAMPLES, ZERO_STRENGTH, STRENGTHS): the shared suite then
covers it.
"""
from defenses.base import (
    ABSOLUTE,
    EDGE_GRAD_B,
    EDGE_H_A,
    EDGES,
    INVERSE_ETA,
    NOISE_UNITS,
    RELATIVE_RMS,
    BaseDefense,
    CliFlag,
    NoiseScale,
    NoiseStats,
    defenses,
    draw_noise,
    make_defense,
    make_generator,
    register,
)
from defenses.identity import NoDefense
from defenses.gaussian import GaussianNoise
from defenses.dp_forward import DPForward
from defenses.dx_privacy import DXPrivacy
from defenses.grad_dp import GradDP
from defenses.nopeek import NoPeek

__all__ = ["ABSOLUTE", "EDGES", "EDGE_GRAD_B", "EDGE_H_A", "INVERSE_ETA", "NOISE_UNITS", "RELATIVE_RMS",
           "BaseDefense", "CliFlag", "DPForward", "DXPrivacy", "GaussianNoise", "GradDP", "NoDefense", "NoPeek", "NoiseScale",
           "NoiseStats", "defenses", "draw_noise", "make_defense", "make_generator", "register"]
