"""Experiments: run records, sweep specs and the sweep runner."""
