"""The FL-LLaMA split: partition spec, parts, wire, parties, training strategies and KV-cached inference."""
from splits.partition import SplitSpec, build_split, parse_split
from splits.runtime import SplitRuntime

__all__ = ["SplitSpec", "parse_split", "build_split", "SplitRuntime"]
