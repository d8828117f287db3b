"""`flbench calibrate`: the public reference RMS of h_A at a split, for a calibrated relative σ."""
from __future__ import annotations

import click

from flbench.cli.common import DEFAULT_MODEL, DEFAULT_SPLIT, emit
from flbench.pipeline.calibrate import DEFAULT_DATA, CalibrationConfig
from flbench.pipeline.validation import default


@click.command("calibrate")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="registry name, local directory or HF id")
@click.option("--split", "split_text", default=DEFAULT_SPLIT, show_default=True,
              help="P,Q: blocks in the client head and tail")
@click.option("--data", default=",".join(DEFAULT_DATA), show_default=True,
              help="public auxiliary corpora (comma-separated; never victim data)")
@click.option("--limit", type=int, default=default(CalibrationConfig, "limit"), show_default=True,
              help="texts per corpus")
@click.option("--max-length", type=int, default=default(CalibrationConfig, "max_length"), show_default=True,
              help="tokens per text (truncation)")
@click.option("--seed", type=int, default=default(CalibrationConfig, "seed"), show_default=True,
              help="which texts each corpus gives")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def calibrate_cmd(model, split_text, data, limit, max_length, seed, as_json) -> None:
    """Per-token RMS ||h_t||/√d of the public head's output (embedding + P pretrained blocks) on public text,
    real tokens only (no padding): the median is the fixed scale a relative σ multiplies
    (gaussian --noise-relative --noise-scale), independent of the private traffic. Also the mean, quantiles,
    the RMS over all tokens and the attention-sink row (position 0) apart.

    Everything is validated before the model is loaded."""
    from flbench.pipeline.calibrate import OPTIONS, calibrate, calibration_table
    from flbench.pipeline.validation import validate

    cfg = validate(CalibrationConfig, {"model": model, "split": split_text, "data": data, "limit": limit,
                                       "max_length": max_length, "seed": seed}, options=OPTIONS)
    result = calibrate(cfg.model, cfg.split, data=cfg.data, limit=cfg.limit, max_length=cfg.max_length,
                       seed=cfg.seed, batch_size=cfg.batch_size)
    emit(result, as_json, lambda o: click.echo(calibration_table(o)))
