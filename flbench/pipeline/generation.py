"""Prompt encoding and the three generation modes shared by `flbench generate` and the benchmark:
centralized `generate(do_sample=False)`, split KV-cached, split naive (no KV cache)."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch

from flbench.core.errors import FlbenchError
from flbench.models import LoadedModel
from splits.inference import split_generate
from splits.partition import SplitSpec
from splits.runtime import SplitRuntime
from splits.sequence import pad_rows

MODES = ("kv-cache", "naive", "centralized")


def encode_prompts(tokenizer, prompts: list[str], chat: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded batch. Without `chat` each prompt is tokenized exactly as `tokenizer(text)` would."""
    if not prompts:
        raise FlbenchError("no --prompt given; give at least one non-empty --prompt TEXT")
    for i, p in enumerate(prompts):
        if not p.strip():
            raise FlbenchError(f"--prompt #{i + 1} is empty; prompts must contain text")
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise FlbenchError("--chat: this model's tokenizer has no chat template")
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False) for p in prompts]
        rows = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    else:
        rows = [tokenizer(p)["input_ids"] for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return left_pad(rows, pad)


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (ids, attention mask) of token rows, as generation wants them (splits.sequence.pad_rows)."""
    return pad_rows(rows, int(pad_id), left=True)


def check_context(loaded: LoadedModel, mask: torch.Tensor, max_new_tokens: int) -> None:
    """Refuse, before generating, prompts + --max-new-tokens that do not fit the model's context."""
    ctx = loaded.context_length
    if ctx is None:
        return
    lengths = mask.sum(-1).tolist()
    longest = max(range(len(lengths)), key=lambda i: lengths[i])
    if lengths[longest] >= ctx:
        raise FlbenchError(f"--prompt #{longest + 1} is {lengths[longest]} tokens long; the model's context is {ctx} "
                           "positions, and at least one new token must fit: shorten the prompt")
    room = ctx - int(mask.shape[1])
    if max_new_tokens > room:
        raise FlbenchError(f"--max-new-tokens {max_new_tokens}: the prompt ({mask.shape[1]} tokens) + {max_new_tokens} "
                           f"new tokens exceed the model's context of {ctx} positions; accepted 1..{room}")


@dataclass
class GenerateResult:
    mode: str
    token_ids: list[list[int]]
    seconds: float
    wire: dict = field(default_factory=dict)

    @property
    def new_tokens(self) -> int:
        return sum(len(t) for t in self.token_ids)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("inf")


def _trim(rows: torch.Tensor, eos: list[int]) -> list[list[int]]:
    """Cut each row after its first EOS (the pads generate() appends after it are not generated text)."""
    out = []
    for row in rows.tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        out.append(row[:cut])
    return out


def eos_ids(model) -> list[int]:
    eos = model.generation_config.eos_token_id
    return [] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]


def run_generation(
    loaded: LoadedModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    max_new_tokens: int,
    mode: str = "kv-cache",
    spec: SplitSpec | None = None,
    runtime: SplitRuntime | None = None,
    stop_at_eos: bool = True,
) -> GenerateResult:
    if max_new_tokens < 1:
        raise FlbenchError(f"--max-new-tokens {max_new_tokens}: must be a positive integer")
    if mode not in MODES:
        raise FlbenchError(f"generation mode {mode!r}: accepted {', '.join(MODES)}")
    model = loaded.model
    eos = eos_ids(model) if stop_at_eos else []
    pad = model.generation_config.pad_token_id
    pad = pad if pad is not None else (eos[0] if eos else 0)
    if mode == "centralized":
        cfg = copy.deepcopy(model.generation_config)
        cfg.eos_token_id = eos or None
        cfg.pad_token_id = pad
        cfg.max_new_tokens, cfg.do_sample = max_new_tokens, False
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                 generation_config=cfg).cpu()
        secs = time.perf_counter() - t0
        return GenerateResult(mode, _trim(out[:, ids.shape[1]:], eos), secs, {"bytes_total": 0, "messages": 0})
    rt = runtime or SplitRuntime(loaded, spec)
    rt.wire.reset()
    t0 = time.perf_counter()
    gen = split_generate(rt, ids, mask, max_new_tokens, kv_cache=(mode == "kv-cache"), eos_token_id=eos or None,
                         pad_token_id=pad)
    secs = time.perf_counter() - t0
    wire = rt.wire.stats()
    wire.update(bytes_prefill=gen.prefill_bytes, bytes_per_decode_step=gen.bytes_per_decode_step,
                decode_steps=gen.steps - 1)
    return GenerateResult(mode, _trim(gen.tokens, eos), secs, wire)
