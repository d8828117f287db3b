"""Attacks on the traffic the server saw, registered by name.

    from attacks import Knowledge, attacks, capture, make_attack
    knowledge = Knowledge.from_runtime(rt)
    obs, true_ids = capture(rt, victim_texts)
    recovered = make_attack("embedding-nn", knowledge).fit(aux_texts, knowledge).invert(obs)
"""
from attacks.base import (
    Attack,
    Knowledge,
    Observations,
    attacks,
    capture,
    make_attack,
    most_frequent_token,
    observe,
    register,
)
from attacks.embedding_nn import EmbeddingNN
from attacks.gradient_label import GradientLabel  # noqa: F401
from attacks.joint_inversion import JointInversion  # noqa: F401
from attacks.learned_inversion import LearnedInversion
from attacks.map_inversion import MAPInversion  # noqa: F401
from attacks.output_inversion import OutputInversion
from attacks.relaxation import Relaxation  # noqa: F401

__all__ = ["Attack", "EmbeddingNN", "Knowledge", "LearnedInversion", "Observations", "OutputInversion", "attacks", "capture", "make_attack",
           "most_frequent_token", "observe", "register"]
