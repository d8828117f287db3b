"""`flbench plan`: for a model and a list of splits, what each party (client head, server trunk, client tail)
holds and computes, and what crosses the wire — the numbers for picking a split for one's hardware.

Conventions (also printed under the table and carried in the JSON's `conventions`):

- **Parameters** are counted from the model's modules (no weights are read for the counts; the model is only
  built). `params` counts every parameter once, so the three parties sum to the model's parameter count;
  a tied LM head (`tie_word_embeddings`: the LM head *is* the embedding matrix) is counted with the head,
  which owns the embedding. `params_held` is what a party must store: the tail also holds a copy of the tied
  matrix to compute logits, so with tied embeddings tail `params_held` = `params` + V·d.
  Bytes = `params_held` × the dtype's size (LoRA adapters and optimizer states are not included).
- **KV cache** (generation, per party): blocks × 2 (K and V) × B × T × n_kv_heads × head_dim × s bytes.
- **Training activations** (saved for the backward; eager attention, no recomputation; an estimate):
  per block B·T·(4·d + 2·q_dim + 2·kv_dim + 4·d_ff + H·T)·s bytes — norm inputs and outputs (4d), q and the
  attention output (2·q_dim), k and v (2·kv_dim), gate, up, act(gate) and their product (4·d_ff), the
  attention probabilities (H·T) — plus, for the tail, B·T·(2·d + V)·s (final norm in/out and the logits).
- **FLOPs per token, forward**: 2 × the weight-matrix parameters the token passes through + 4·q_dim·T per
  block (QKᵀ and AV against T cached tokens: a decode step at context T; a T-token prefill or training
  sequence averages (T+1)/2); the tail adds the LM head's 2·d·V; the embedding lookup, norms, rotary and
  softmax are not counted. **Training ≈ 3 × forward** (the backward ≈ 2 × the forward; with a frozen base
  and LoRA the weight-gradient half is mostly skipped, so 3× is an upper bound).
- **Wire** (`splits.wire`: a message is a 32-byte header + an int32 length/position per sequence + the real
  tokens' vectors at the wire dtype, `s_w` bytes each; padding is never sent): a training step over B
  sequences of T tokens moves h_A and h_B forward and dL/dh_B and dL/dh_A backward, 4·(32 + 4·B) + 4·B·T·d·s_w
  bytes; a prefill 2·(32 + 4·B) + 2·n·d·s_w for n = B·T prompt tokens; a decode step 2·(32 + 4·B) + 2·B·d·s_w.
  The wire does not depend on the split (every cut carries one d-vector per token).
"""
from __future__ import annotations

from typing import Any

import torch

from flbench.core.errors import FlbenchError
from splits.partition import SplitSpec
from splits.wire import HEADER_BYTES, WIRE_DTYPES

DTYPES = tuple(WIRE_DTYPES)  # fp32, bf16, fp16
PARTIES = (("head", "client"), ("trunk", "server"), ("tail", "client"))
TRAIN_FLOPS_FACTOR = 3

CONVENTIONS = {
    "params": "each parameter counted once (parties sum to the model's count); a tied LM head is counted with the "
              "head (owner of the embedding); params_held adds the tail's copy of the tied matrix",
    "weights_bytes": "params_held × dtype bytes (adapters and optimizer states not included)",
    "kv_cache_bytes": "blocks × 2 × B × T × n_kv_heads × head_dim × s",
    "train_activation_bytes": "per block B·T·(4·d + 2·q_dim + 2·kv_dim + 4·d_ff + H·T)·s (eager attention, no "
                              "recomputation); tail + B·T·(2·d + V)·s",
    "flops_per_token_forward": "2 × weight-matrix parameters passed + 4·q_dim·T per block (context T) + tail "
                               "LM head 2·d·V; embedding, norms, rotary, softmax not counted",
    "flops_per_token_train": "3 × forward (backward ≈ 2 × forward)",
    "wire": "message = 32-byte header + 4·B + n·d·s_w; train step 4 messages of B·T tokens (h_A, h_B, dL/dh_B, "
            "dL/dh_A); prefill 2 messages of B·T tokens; decode step 2 messages of B tokens",
}


def dtype_bytes(dtype: str) -> int:
    if dtype not in WIRE_DTYPES:
        raise FlbenchError(f"--dtype {dtype!r}: accepted {', '.join(DTYPES)}")
    return WIRE_DTYPES[dtype].itemsize


def message_bytes(batch: int, n_tokens: int, hidden_size: int, wire_dtype: str) -> int:
    """Bytes of one wire message carrying `n_tokens` real tokens of `batch` sequences (splits.wire's layout)."""
    return HEADER_BYTES + 4 * batch + n_tokens * hidden_size * WIRE_DTYPES[wire_dtype].itemsize


def wire_plan(hidden_size: int, batch: int, seq_len: int, wire_dtype: str) -> dict:
    n = batch * seq_len
    msg = message_bytes(batch, n, hidden_size, wire_dtype)
    train_step = 4 * msg
    prefill = 2 * msg
    decode = 2 * message_bytes(batch, batch, hidden_size, wire_dtype)
    return {
        "wire_dtype": wire_dtype,
        "header_bytes": HEADER_BYTES,
        "train_step_bytes": train_step,
        "train_forward_bytes": 2 * msg,  # h_A + h_B
        "train_backward_bytes": 2 * msg,  # dL/dh_B + dL/dh_A
        "train_bytes_per_token": train_step / n,
        "prefill_bytes": prefill,
        "prefill_bytes_per_token": prefill / n,
        "decode_step_bytes": decode,
        "decode_bytes_per_token": decode / batch,
    }


def _shape(config: Any) -> dict:
    d = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or d // heads)
    kv = int(getattr(config, "num_key_value_heads", None) or heads)
    return {"d": d, "heads": heads, "kv_heads": kv, "head_dim": head_dim, "q_dim": heads * head_dim,
            "kv_dim": kv * head_dim, "d_ff": int(config.intermediate_size), "vocab": int(config.vocab_size)}


def _block_counts(block: torch.nn.Module) -> tuple[int, int]:
    """(parameters, weight-matrix parameters of its Linear layers) of one decoder block."""
    params = sum(p.numel() for p in block.parameters())
    matmul = sum(m.weight.numel() for m in block.modules() if isinstance(m, torch.nn.Linear))
    return params, matmul


def plan(model: Any, specs: list[SplitSpec], batch: int = 1, seq_len: int = 512, dtype: str = "fp32",
         wire_dtype: str | None = None) -> dict:
    """The plan for `model` (a LLaMA-family *ForCausalLM) at each split in `specs`: one row per (split, party)."""
    s = dtype_bytes(dtype)
    wire_dtype = wire_dtype or dtype
    if wire_dtype not in WIRE_DTYPES:
        raise FlbenchError(f"--wire-dtype {wire_dtype!r}: accepted {', '.join(DTYPES)}")
    if batch < 1 or seq_len < 1:
        raise FlbenchError(f"--batch {batch} --seq-len {seq_len}: both must be positive integers")
    inner = model.model
    blocks = list(inner.layers)
    n = len(blocks)
    for spec in specs:
        spec.validate(n)
    shp = _shape(model.config)
    counts = [_block_counts(b) for b in blocks]
    embed = inner.embed_tokens.weight
    lm = model.lm_head.weight
    tied = lm is embed or lm.data_ptr() == embed.data_ptr()
    norm = sum(p.numel() for p in inner.norm.parameters())
    total = sum(p.numel() for p in model.parameters())  # torch yields a shared (tied) parameter once
    B, T, d = batch, seq_len, shp["d"]
    rows = []
    for spec in specs:
        ranges = {"head": (0, spec.p), "trunk": (spec.p, n - spec.q), "tail": (n - spec.q, n)}
        for role, party in PARTIES:
            a, b = ranges[role]
            k = b - a
            params = sum(c[0] for c in counts[a:b])
            matmul = sum(c[1] for c in counts[a:b])
            held = params
            flops = 2 * matmul + k * 4 * shp["q_dim"] * T
            act = k * B * T * (4 * d + 2 * shp["q_dim"] + 2 * shp["kv_dim"] + 4 * shp["d_ff"] + shp["heads"] * T) * s
            if role == "head":
                params += embed.numel()
                held = params
            if role == "tail":
                params += norm + (0 if tied else lm.numel())
                held = params + (lm.numel() if tied else 0)
                flops += 2 * lm.numel()
                act += B * T * (2 * d + shp["vocab"]) * s
            kv = k * 2 * B * T * shp["kv_dim"] * s
            rows.append({
                "split": str(spec), "party": role, "owner": party, "blocks": k,
                "block_range": f"{a}..{b - 1}" if k else "-",
                "params": int(params), "params_held": int(held), "weights_bytes": int(held * s),
                "kv_cache_bytes": int(kv), "train_activation_bytes": int(act),
                "generate_memory_bytes": int(held * s + kv), "train_memory_bytes": int(held * s + act),
                "flops_per_token_forward": int(flops), "flops_per_token_train": int(TRAIN_FLOPS_FACTOR * flops),
            })
    return {
        "model": {"blocks": n, **shp, "params": int(total), "tied_embeddings": bool(tied)},
        "batch": B, "seq_len": T, "dtype": dtype,
        "rows": rows,
        "wire": wire_plan(d, B, T, wire_dtype),
        "conventions": CONVENTIONS,
    }


def _mib(x: int) -> str:
    return f"{x / 2**20:.2f}"


def plan_table(p: dict) -> str:
    """The human view: one markdown table (pandas to_markdown) of the parties, one of the wire."""
    import pandas as pd

    rows = [{
        "split": r["split"], "party": f"{r['party']} ({r['owner']})", "blocks": r["block_range"],
        "params": f"{r['params']:,}", "held": f"{r['params_held']:,}", "weights MiB": _mib(r["weights_bytes"]),
        "KV cache MiB": _mib(r["kv_cache_bytes"]), "train act. MiB": _mib(r["train_activation_bytes"]),
        "fwd MFLOP/tok": f"{r['flops_per_token_forward'] / 1e6:.2f}",
        "train MFLOP/tok": f"{r['flops_per_token_train'] / 1e6:.2f}",
    } for r in p["rows"]]
    w = p["wire"]
    wire = pd.DataFrame([{
        "wire dtype": w["wire_dtype"], "train B/step": f"{w['train_step_bytes']:,}",
        "train B/token": f"{w['train_bytes_per_token']:.1f}", "prefill B": f"{w['prefill_bytes']:,}",
        "prefill B/token": f"{w['prefill_bytes_per_token']:.1f}", "decode B/step": f"{w['decode_step_bytes']:,}",
    }])
    m = p["model"]
    head = (f"{m['blocks']} blocks, d={m['d']}, d_ff={m['d_ff']}, heads={m['heads']} (kv {m['kv_heads']}), "
            f"V={m['vocab']}, {m['params']:,} parameters{' (tied LM head counted with the head)' if m['tied_embeddings'] else ''}; "
            f"batch {p['batch']} × {p['seq_len']} tokens, {p['dtype']}")
    notes = "\n".join(f"- {k}: {v}" for k, v in p["conventions"].items())
    return (f"{head}\n\n{pd.DataFrame(rows).to_markdown(index=False)}\n\n"
            f"wire (the same for every split):\n\n{wire.to_markdown(index=False)}\n\n{notes}")
