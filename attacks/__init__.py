"""Attacks on the traffic the server saw, registered by name."""
