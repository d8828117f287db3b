"""`flbench calibrate`: the public reference scale of h_A at a split, for a calibrated relative σ.

A relative Gaussian σ (`gaussian --noise-relative`) multiplies a reference RMS. Measured per call on the
private traffic itself, that reference (i) depends on the private data, (ii) counts padding, and (iii) is
dominated at P ≥ 2 by one outlying row: the attention sink at position 0, whose hidden state is an order of
magnitude larger than a typical token's (Xiao et al., "Efficient Streaming Language Models with Attention
Sinks", arXiv 2309.17453; Sun et al., "Massive Activations in Large Language Models", arXiv 2402.17762). One
nominal multiple then means a different per-token SNR at each split depth.

This module measures the reference once, on PUBLIC text, with the public head (`splits.partition.build_head`:
the embedding and the first P pretrained blocks, which the threat model grants everyone): the per-token RMS
r_t = ||h_t|| / √d over REAL tokens only (padding never enters), summarised robustly. `token_rms_median` is
the calibration value (`--noise-scale`); the rest explains it: quantiles, the mean, `rms_all` (one RMS over
every real token, the per-call convention without padding, sink included), the position-0 row apart
(`first_position_rms_median`) and `rms_without_position_0`.

Texts: `limit` of each public auxiliary corpus in `data`, chosen by `seed` (`flbench.data.load_corpus`, as
`flbench.pipeline.attack.load_aux` picks the attackers' auxiliary texts), tokenized as the attacks tokenize
them (`attacks.base.tokenize_aux`: truncated to `max_length`, empty ones dropped), right-padded into batches
(`splits.sequence.pad_rows`, positions from the mask as the runtime does). Deterministic: the same inputs
give the same numbers (batching changes only float rounding, not which rows count).
"""
from __future__ import annotations

import sys
import warnings
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from flbench.core.errors import FlbenchError
from flbench.pipeline.validation import (
    Name,
    PosInt,
    Seed,
    SplitText,
    as_list,
    check_model,
    validate,
    value_error,
)

DEFAULT_DATA = ("xsum", "sst2")  # the attacks' default auxiliary corpora (VictimsConfig.aux_data)
QUANTILES = {"p05": 0.05, "p25": 0.25, "p75": 0.75, "p95": 0.95}

# config key → CLI option, for one-line errors naming the option
OPTIONS = {"model": "--model", "split": "--split", "data": "--data", "limit": "--limit",
           "max_length": "--max-length", "seed": "--seed", "batch_size": "--batch-size"}


class CalibrationConfig(BaseModel):
    """What a calibration measures; validated (names against the registries) before any loading."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    model: Name | None = Field(None, description="registry name, local model directory or Hugging Face id "
                                                 "(None: an already loaded model is given)")
    split: SplitText = Field(description="P,Q: blocks in the client head and tail")
    data: tuple[Name, ...] = Field(DEFAULT_DATA, description="public auxiliary corpora")
    limit: PosInt = Field(200, description="texts per corpus")
    max_length: PosInt = Field(64, description="tokens per text (truncation)")
    seed: Seed = Field(0, description="which texts each corpus gives")
    batch_size: PosInt = Field(16, description="texts per head forward")

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str | None, info: ValidationInfo) -> str | None:
        return v if v is None else check_model(v, info)

    @field_validator("data", mode="before")
    @classmethod
    def _data_list(cls, v: Any) -> Any:
        return [x.strip() for x in v.split(",")] if isinstance(v, str) else as_list(v)

    @field_validator("data")
    @classmethod
    def _public(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from flbench.data import aux_names

        v = tuple(dict.fromkeys(v))
        if not v or any(n not in aux_names() for n in v):
            raise value_error(f"expected public corpora, comma-separated: {', '.join(aux_names())} "
                              "(never victim data: the scale must not depend on private text)")
        return v


def _loaded(model: Any):
    from flbench.models import load_model

    return load_model(model, progress=False) if isinstance(model, str) else model


def public_texts(cfg: CalibrationConfig) -> tuple[list[str], list[str]]:
    """`cfg.limit` texts of each corpus in `cfg.data` (seeded), and the notes (warnings) that came up."""
    from flbench.data import load_corpus

    texts: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in cfg.data:
            texts.extend(r.text for r in load_corpus(name, limit=cfg.limit, seed=cfg.seed))
    return texts, [str(w.message) for w in caught]


def token_rms(head: Any, seqs: list[list[int]], pad_id: int, batch_size: int):
    """(r, positions): per-token RMS ||h_t|| / √d (float64) of every REAL token of `seqs` at the head's output,
    and each token's position (0 = the first token of its text), sample-major."""
    import torch

    from splits.sequence import pack, pad_rows, positions_from_mask

    rms, pos = [], []
    with torch.no_grad():
        for start in range(0, len(seqs), batch_size):
            ids, mask = pad_rows(seqs[start : start + batch_size], pad_id)
            positions = positions_from_mask(mask)
            h = head(ids, mask, positions)
            rows = pack(h, mask.to(h.device)).detach().double().cpu()  # real tokens only: padding never counts
            rms.append(rows.square().mean(-1).sqrt())
            pos.append(positions[mask.bool()])
    return torch.cat(rms), torch.cat(pos)


def summarize(r: Any, positions: Any) -> dict[str, float | int | None]:
    """The calibration numbers from per-token RMS `r` and positions (see the module docstring)."""
    import numpy as np

    r = np.asarray(r, dtype=np.float64)
    first = np.asarray(positions) == 0
    rest = r[~first]

    def rms_of(x: np.ndarray) -> float | None:
        return float(np.sqrt(np.mean(np.square(x)))) if x.size else None

    out: dict[str, float | int | None] = {
        "token_rms_median": float(np.median(r)),
        "token_rms_mean": float(np.mean(r)),
        **{f"token_rms_{k}": float(np.quantile(r, q)) for k, q in QUANTILES.items()},
        "token_rms_max": float(np.max(r)),
        "rms_all": rms_of(r),
        "rms_without_position_0": rms_of(rest),
        "first_position_rms_median": float(np.median(r[first])) if first.any() else None,
        "first_position_rms_mean": float(np.mean(r[first])) if first.any() else None,
        # the share of all real tokens' energy Σ||h_t||² carried by the position-0 rows
        "first_position_energy_share": float(np.sum(np.square(r[first])) / np.sum(np.square(r))),
        "token_rms_median_without_position_0": float(np.median(rest)) if rest.size else None,
        "n_tokens": int(r.size),
        "n_first_positions": int(first.sum()),
    }
    out["rms_all_over_median"] = out["rms_all"] / out["token_rms_median"]
    return out


def calibrate(model: Any, split: Any, data: Any = DEFAULT_DATA, limit: int = 200, max_length: int = 64,
              seed: int = 0, batch_size: int = 16) -> dict:
    """Calibrate the reference RMS of h_A at `split` ("P,Q" or a SplitSpec) for `model` (a name, local
    directory or HF id, or an already loaded `flbench.models.LoadedModel`) on public text: see the module
    docstring. Bad inputs raise a one-line FlbenchError before any loading."""
    from attacks.base import tokenize_aux
    from splits.partition import build_head, parse_split

    cfg = validate(CalibrationConfig, {"model": model if isinstance(model, str) else None, "split": str(split),
                                       "data": data, "limit": limit, "max_length": max_length, "seed": seed,
                                       "batch_size": batch_size})
    texts, notes = public_texts(cfg)
    if not texts:
        raise FlbenchError(f"calibrate: corpora {', '.join(cfg.data)} gave no texts")
    for n in notes:
        print(f"[flbench] note: {n}", file=sys.stderr)
    loaded = _loaded(model)
    spec = parse_split(cfg.split)
    spec.validate(len(loaded.model.model.layers))
    ctx = loaded.context_length
    if ctx is not None and cfg.max_length > ctx:
        raise FlbenchError(f"--max-length {cfg.max_length}: longer than the model's context of {ctx} positions; "
                           f"accepted 1..{ctx}")
    tok = loaded.tokenizer
    seqs = tokenize_aux(tok, texts, cfg.max_length)
    head = build_head(loaded.model, spec).eval().requires_grad_(False)
    r, positions = token_rms(head, seqs, tok.pad_token_id if tok.pad_token_id is not None else 0, cfg.batch_size)
    return {
        "model": loaded.identity,
        "split": str(spec),
        "data": list(cfg.data),
        "limit": cfg.limit,
        "max_length": cfg.max_length,
        "seed": cfg.seed,
        "dtype": loaded.dtype,
        "hidden_size": int(loaded.model.config.hidden_size),
        "n_texts": len(seqs),
        **summarize(r, positions),
        "scale": "token_rms_median",  # the calibration value: gaussian --noise-relative --noise-scale <it>
        "notes": notes,
    }


def calibration_table(res: dict) -> str:
    """The human view: the numbers, one per line, and the flag to use."""
    m = res["model"]
    lines = [(f"{m['name']} split {res['split']}: {res['n_texts']} public texts ({', '.join(res['data'])}, "
              f"≤ {res['max_length']} tokens, seed {res['seed']}), {res['n_tokens']} real tokens, "
              f"d = {res['hidden_size']}"),
             "per-token RMS r_t = ||h_t|| / √d over real tokens (padding excluded):"]
    keys = ["token_rms_median", "token_rms_mean", *(f"token_rms_{k}" for k in QUANTILES), "token_rms_max",
            "rms_all", "rms_without_position_0", "first_position_rms_median", "first_position_energy_share",
            "rms_all_over_median"]
    width = max(map(len, keys))
    for k in keys:
        v = res.get(k)
        lines.append(f"  {k:<{width}}  {'-' if v is None else f'{v:.4g}'}")
    lines.append(f"calibrated relative σ: --noise-relative --noise-sigma S --noise-scale {res['token_rms_median']:.6g}")
    return "\n".join(lines)
