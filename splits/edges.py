"""The client's outgoing edges a defense can sit on, and the check that a defense declares the edge it is put on.

Torch-free (the CLI and the config validate with it before anything is loaded). splits does not import
defenses: a defense is any object; it declares its edges in `edges` ("h_a" when it declares none).
"""
from __future__ import annotations

from typing import Any

from flbench.core.errors import FlbenchError

# What crosses each edge (client → server), and the option that puts a defense there.
EDGES = {"h_a": "the head's hidden states h_A (--defense)", "grad_b": "the tail's gradient dL/dh_B (--grad-defense)"}


def defense_edges(defense: Any) -> tuple[str, ...]:
    """The edges a defense (object or class) declares (`edges`; one that declares none protects h_A). Nothing
    on an edge (None, or a defense of the family "none") fits every edge."""
    if defense is None or getattr(defense, "family", None) == "none":
        return tuple(EDGES)
    return tuple(getattr(defense, "edges", ("h_a",)))


def check_edge(defense: Any, edge: str) -> None:
    """Refuse (one FlbenchError line) a defense put on an edge it does not declare."""
    edges = defense_edges(defense)
    if edge not in edges:
        name = getattr(defense, "name", type(defense).__name__)
        other = [e for e in edges if e in EDGES]
        hint = f"; it belongs on {EDGES[other[0]]}" if other else ""
        raise FlbenchError(f"defense {name!r} cannot sit on {EDGES[edge]}: it declares edges "
                           f"{', '.join(edges) or 'none'}{hint}")
