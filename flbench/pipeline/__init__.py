"""Pipeline: runtime construction, fine-tuning, utility, capture + attacks, one benchmark cell."""
