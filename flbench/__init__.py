"""flbench: privacy attacks and defenses in federated split learning (FL-LLaMA) of LLaMA-family models."""

__version__ = "0.1.0"
