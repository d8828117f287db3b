"""Defenses on the client's outgoing edge, registered by name."""
