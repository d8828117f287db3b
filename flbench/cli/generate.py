"""`flbench generate`: greedy generation through the split (KV-cached by default)."""
from __future__ import annotations

import click

from flbench.cli.common import (
    DEFAULT_MODEL,
    DEFAULT_SPLIT,
    POSITIVE_INT,
    FiniteFloatRange,
    compute_options,
    defense_options,
    emit,
    make_cli_defense,
    parse_split_option,
    refuse_with,
    resolve_devices,
    wire_options,
)
from flbench.core.errors import FlbenchError


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="registry name, local directory or HF id")
@click.option("--split", "split_text", default=DEFAULT_SPLIT, show_default=True, help="P,Q: blocks in the client head and tail")
@click.option("--prompt", "prompts", multiple=True, required=True, help="prompt text; repeat for a batch")
@click.option("--max-new-tokens", type=POSITIVE_INT, default=32, show_default=True,
              help="tokens to generate per prompt; prompt + new tokens must fit the model's context")
@click.option("--centralized", is_flag=True, help="run the unsplit model (model.generate) instead")
@click.option("--no-kv-cache", is_flag=True, help="naive split: re-send and recompute the whole sequence every step")
@click.option("--chat", is_flag=True, help="wrap each prompt in the model's chat template")
@wire_options
@compute_options()
@defense_options
@click.option("--transport", type=click.Choice(["inprocess", "distributed"]), default="inprocess", show_default=True,
              help="distributed: the server and the client in their own processes (torch.distributed, loopback)")
@click.option("--timeout", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="--transport distributed: seconds a party waits for a peer [default: 300]")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def generate(model, split_text, prompts, max_new_tokens, centralized, no_kv_cache, chat, wire_dtype, dtype, device,
             client_device, server_device, transport, timeout, as_json, **defense_opts) -> None:
    """Greedy generation through the split (KV-cached by default)."""
    from flbench.models import load_model
    from flbench.pipeline.generation import (
        check_context,
        encode_prompts,
        run_generation,
    )
    from splits.runtime import SplitRuntime

    if centralized and no_kv_cache:
        raise FlbenchError("--centralized and --no-kv-cache exclude each other; pick one")
    refuse_with("--centralized", centralized, "wire_dtype", why="the unsplit model sends nothing over a wire")
    devices = resolve_devices(device, client_device, server_device, centralized)
    spec = parse_split_option(split_text)
    defense, gen = make_cli_defense(**defense_opts)
    if centralized and defense.name != "none":
        raise FlbenchError(f"--centralized runs the unsplit model: there is no wire for --defense {defense.name}")
    loaded = load_model(model, dtype=dtype, device=devices["device"])
    spec.validate(len(loaded.model.model.layers))
    ids, mask = encode_prompts(loaded.tokenizer, list(prompts), chat)
    check_context(loaded, mask, max_new_tokens)  # before generating: a huge --max-new-tokens never starts
    mode = "centralized" if centralized else "naive" if no_kv_cache else "kv-cache"
    refuse_with("--transport inprocess", transport == "inprocess", "timeout", why="only peers in other processes time out")
    rt = None if centralized else SplitRuntime(loaded, spec, wire_dtype=wire_dtype, defense=defense, generator=gen,
                                                 client_device=devices["client_device"],
                                                 server_device=devices["server_device"])
    if transport == "distributed":
        from flbench.pipeline.distributed import generate_distributed

        res, remote_stats = generate_distributed(
            model=model, spec=spec, prompts=list(prompts), max_new_tokens=max_new_tokens, mode=mode, chat=chat,
            wire_dtype=wire_dtype, timeout=timeout, defense=defense, dtype=dtype, devices=devices,
            seed=defense_opts.get("seed", 0), secure_noise=bool(defense_opts.get("secure_noise")))
    else:
        res, remote_stats = run_generation(loaded, ids, mask, max_new_tokens, mode, spec, rt), None
    texts = [loaded.tokenizer.decode(t, skip_special_tokens=True) for t in res.token_ids]
    out = {
        "model": loaded.name,
        "split": None if centralized else str(spec),
        "mode": mode,
        "compute": ({"dtype": dtype, "device": devices["device"]} if centralized else rt.placement()),
        "texts": texts,
        "token_ids": res.token_ids,
        "new_tokens": res.new_tokens,
        "seconds": round(res.seconds, 4),
        "tokens_per_s": round(res.tokens_per_s, 3),
        "wire": res.wire,
        "defense": defense.describe(),
        "defense_stats": remote_stats if remote_stats is not None else defense.stats(),
    }

    def human(o):
        for p, t in zip(prompts, texts):
            click.echo(f"> {p}\n{t}\n")
        w = o["wire"]
        extra = "" if centralized else (f", wire {w['bytes_total']} B in {w['messages']} messages "
                                        f"(prefill {w['bytes_prefill']} B, {w['bytes_per_decode_step']:.0f} B/decode step, "
                                        f"{w['mask_bytes_saved']} B saved by sending lengths instead of masks)")
        click.echo(f"{mode}: {o['new_tokens']} tokens in {o['seconds']:.2f} s ({o['tokens_per_s']:.1f} tok/s){extra}", err=True)

    emit(out, as_json, human)
