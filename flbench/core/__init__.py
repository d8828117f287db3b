"""Core: errors, the one registry, atomic IO, canonical JSON and hashing, provenance. Imports nothing else of flbench."""
