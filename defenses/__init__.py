"""Defenses on the client's outgoing edge, registered by name.

    from defenses import defenses, make_defense, make_generator
    d = make_defense("gaussian", sigma=0.5)
    sent = d(h_A, make_generator(seed=0, secure=False))
"""
from defenses.base import BaseDefense, NoiseStats, defenses, make_defense, make_generator, register
from defenses.identity import NoDefense
from defenses.gaussian import GaussianNoise
from defenses.dp_forward import DPForward

__all__ = ["BaseDefense", "DPForward", "GaussianNoise", "NoDefense", "NoiseStats", "defenses", "make_defense",
           "make_generator", "register"]
