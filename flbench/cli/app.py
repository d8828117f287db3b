"""`flbench` command line. `--json` prints exactly one JSON object on stdout; progress goes to stderr.
Any user mistake ends with one line on stderr and exit status 2."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from flbench.core.errors import FlbenchError

DEFAULT_MODEL = "smollm2-135m"
_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _emit(obj: dict, as_json: bool, human) -> None:
    if as_json:
        click.echo(json.dumps(obj, indent=None, sort_keys=False))
    else:
        human(obj)


def _split(value: str):
    from splits.partition import parse_split

    return parse_split(value)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flbench")
def cli() -> None:
    """flbench: privacy attacks and defenses in federated split learning (FL-LLaMA) of LLaMA-family models.

    A model is cut at --split P,Q into a client head (embedding + P blocks), a server trunk and a client
    tail (Q blocks + norm + LM head); the parties exchange real, counted messages.
    """


@cli.command("ls")
@click.argument("what", type=click.Choice(["models", "attacks", "defenses", "tasks"]))
def ls_cmd(what: str) -> None:
    """List what is registered."""
    from flbench.cli import listing as registries

    for name, desc in registries.listing(what):
        click.echo(f"{name:20s} {desc}")


def _wire_options(f):
    f = click.option("--wire-dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
                     help="dtype of tensors on the wire")(f)
    return f


def _defense_options(f):
    opts = [
        click.option("--defense", default=None, help="defense on the client's outgoing edge (flbench ls defenses); "
                     "default none, or gaussian when --noise-sigma is given"),
        click.option("--noise-sigma", type=float, default=None, help="gaussian: noise standard deviation σ"),
        click.option("--noise-relative", is_flag=True, help="gaussian: σ is a multiple of the clean hidden states' RMS"),
        click.option("--dp-clip", type=float, default=None, help="dp-forward: per-token L2 clip C"),
        click.option("--noise-multiplier", type=float, default=None, help="dp-forward: noise std = z × C"),
        click.option("--dp-delta", type=float, default=None, help="dp-forward: δ (default 1e-5)"),
        click.option("--seed", type=int, default=0, show_default=True, help="seed for noise draws (benchmarks)"),
        click.option("--secure-noise", is_flag=True, help="seed the noise generator from the OS instead of --seed"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _defense_spec(defense, noise_sigma, noise_relative, dp_clip, noise_multiplier, dp_delta) -> dict:
    """CLI options → {"name": ..., **params}. A --noise-sigma without --defense means gaussian."""
    name = defense or ("gaussian" if noise_sigma is not None else "none")
    params = {
        "gaussian": {"sigma": noise_sigma if noise_sigma is not None else 0.0, "relative": noise_relative},
        "dp-forward": {k: v for k, v in (("clip", dp_clip), ("noise_multiplier", noise_multiplier),
                                         ("delta", dp_delta)) if v is not None},
    }.get(name, {})
    if name not in ("gaussian",) and (noise_sigma is not None or noise_relative):
        raise FlbenchError(f"--noise-sigma/--noise-relative apply to --defense gaussian, not {name!r}")
    return {"name": name, **params}


def _make_defense(defense, noise_sigma, noise_relative, dp_clip, noise_multiplier, dp_delta, seed, secure_noise):
    """CLI options → (defense, generator)."""
    from defenses import make_defense, make_generator

    spec = _defense_spec(defense, noise_sigma, noise_relative, dp_clip, noise_multiplier, dp_delta)
    d = make_defense(spec.pop("name"), **spec)
    gen = make_generator(seed=None if secure_noise else seed, secure=secure_noise)
    return d, gen


@cli.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="registry name, local directory or HF id")
@click.option("--split", "split_text", default="2,2", show_default=True, help="P,Q: blocks in the client head and tail")
@click.option("--prompt", "prompts", multiple=True, required=True, help="prompt text; repeat for a batch")
@click.option("--max-new-tokens", type=int, default=32, show_default=True)
@click.option("--centralized", is_flag=True, help="run the unsplit model (model.generate) instead")
@click.option("--no-kv-cache", is_flag=True, help="naive split: re-send and recompute the whole sequence every step")
@click.option("--chat", is_flag=True, help="wrap each prompt in the model's chat template")
@_wire_options
@_defense_options
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def generate(model, split_text, prompts, max_new_tokens, centralized, no_kv_cache, chat, wire_dtype, as_json,
             **defense_opts) -> None:
    """Greedy generation through the split (KV-cached by default)."""
    from flbench.pipeline.generation import encode_prompts, run_generation
    from flbench.models import load_model
    from splits.runtime import SplitRuntime

    if centralized and no_kv_cache:
        raise FlbenchError("--centralized and --no-kv-cache exclude each other; pick one")
    if max_new_tokens < 1:
        raise FlbenchError(f"--max-new-tokens {max_new_tokens}: must be a positive integer")
    spec = _split(split_text)
    defense, gen = _make_defense(**defense_opts)
    if centralized and defense.name != "none":
        raise FlbenchError(f"--centralized runs the unsplit model: there is no wire for --defense {defense.name}")
    loaded = load_model(model)
    spec.validate(len(loaded.model.model.layers))
    ids, mask = encode_prompts(loaded.tokenizer, list(prompts), chat)
    mode = "centralized" if centralized else "naive" if no_kv_cache else "kv-cache"
    rt = None if centralized else SplitRuntime(loaded, spec, wire_dtype=wire_dtype, defense=defense, generator=gen)
    res = run_generation(loaded, ids, mask, max_new_tokens, mode, spec, rt)
    texts = [loaded.tokenizer.decode(t, skip_special_tokens=True) for t in res.token_ids]
    out = {
        "model": loaded.name,
        "split": None if centralized else str(spec),
        "mode": mode,
        "texts": texts,
        "token_ids": res.token_ids,
        "new_tokens": res.new_tokens,
        "seconds": round(res.seconds, 4),
        "tokens_per_s": round(res.tokens_per_s, 3),
        "wire": res.wire,
        "defense": defense.describe(),
        "defense_stats": defense.stats(),
    }

    def human(o):
        for p, t in zip(prompts, texts):
            click.echo(f"> {p}\n{t}\n")
        w = o["wire"]
        extra = "" if centralized else (f", wire {w['bytes_total']} B in {w['messages']} messages "
                                        f"(prefill {w['bytes_prefill']} B, {w['bytes_per_decode_step']:.0f} B/decode step, "
                                        f"{w['mask_bytes_saved']} B saved by sending lengths instead of masks)")
        click.echo(f"{mode}: {o['new_tokens']} tokens in {o['seconds']:.2f} s ({o['tokens_per_s']:.1f} tok/s){extra}", err=True)

    _emit(out, as_json, human)


@cli.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="registry name, local directory or HF id")
@click.option("--split", "split_text", default="2,2", show_default=True, help="P,Q: blocks in the client head and tail")
@click.option("--data-file", type=click.Path(dir_okay=False), default=None,
              help="training text: one text per line, or JSONL with a 'text' field")
@click.option("--task", "task_name", default=None, help="train on a task's fixed training portion (flbench ls tasks); "
              "loss on the answer only")
@click.option("--data-dir", default=None, help="local data directory for --task (default: $FLBENCH_DATA_DIR, ../shared/data)")
@click.option("--centralized", is_flag=True, help="reference run: the unsplit model, same adapters, data and budget")
@click.option("--strategy", type=click.Choice(["sequential"]), default="sequential", show_default=True,
              help="training parallelism (client-batch and server-hierarchical: not yet)")
@click.option("--clients", type=int, default=1, show_default=True, help="number of clients (data split round-robin)")
@click.option("--steps", type=int, default=20, show_default=True, help="optimizer steps per client")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--max-length", type=int, default=128, show_default=True, help="tokens per training sequence")
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--lora-rank", type=int, default=8, show_default=True)
@click.option("--lora-alpha", type=float, default=16.0, show_default=True)
@click.option("--train-parts", default="head,trunk,tail", show_default=True, help="parts with LoRA adapters")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="directory for adapters and run.json")
@_wire_options
@_defense_options
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def train(model, split_text, data_file, task_name, data_dir, centralized, strategy, clients, steps, batch_size, max_length, lr, lora_rank, lora_alpha,
          train_parts, out, wire_dtype, as_json, **defense_opts) -> None:
    """Split LoRA fine-tuning with the defense active on the wire."""
    from flbench.data.files import load_data_file
    from flbench.pipeline.finetune import TrainConfig, check_writable, model_meta, task_samples, text_samples, train as run_train
    from flbench.models import load_model
    from splits.runtime import SplitRuntime
    from splits.training import LoraSpec

    spec = _split(split_text)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, max_length=max_length, lr=lr, seed=defense_opts["seed"])
    lora = LoraSpec(rank=lora_rank, alpha=lora_alpha, parts=tuple(p.strip() for p in train_parts.split(",") if p.strip()))
    defense, gen = _make_defense(**defense_opts)
    if (data_file is None) == (task_name is None):
        raise FlbenchError("give exactly one of --data-file FILE (plain text) or --task NAME (flbench ls tasks)")
    if centralized and (defense.name != "none" or clients != 1):
        raise FlbenchError("--centralized trains the unsplit model: no wire for a --defense, one client (--clients 1)")
    task = None
    if task_name is not None:
        from flbench.tasks import get_task

        task = get_task(task_name)
        examples = task.load("train", data_dir)  # fails on missing data before the model loads
    else:
        texts = [r.text for r in load_data_file(data_file)]
    out_dir = Path(out)
    check_writable(out_dir)
    loaded = load_model(model)
    spec.validate(len(loaded.model.model.layers))
    samples = (task_samples(loaded.tokenizer, task, examples, max_length) if task is not None
               else text_samples(loaded.tokenizer, texts, max_length))
    rt = SplitRuntime(loaded, spec, n_clients=clients, wire_dtype=wire_dtype, defense=defense, generator=gen)
    meta = model_meta(loaded, rt, defense)
    meta["data"] = {"task": task_name, "data_file": data_file, "data_dir": data_dir}
    summary = run_train(rt, samples, cfg, lora, out_dir, meta, progress=True, centralized=centralized)
    summary["defense_stats"] = defense.stats()

    def human(o):
        where = "centralized (unsplit)" if o["mode"] == "centralized" else f"--split {o['split']}"
        click.echo(f"trained {o['clients']} client(s) × {o['train']['steps']} steps, {where}: loss "
                   f"{o['first_loss']:.3f} → {o['final_loss']:.3f} in {o['seconds']:.1f} s; wire "
                   f"{o['wire']['bytes_total']} B; adapters in {o['out']}")

    _emit(summary, as_json, human)


def _invocation() -> list[str]:
    """The current command as a re-runnable argv, every option spelled out (for result files)."""
    ctx = click.get_current_context()
    argv = ctx.command_path.split()
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        flag = param.opts[0]
        if isinstance(param, click.Option) and param.is_flag:
            if value:
                argv.append(flag)
        elif value is not None and flag != "--json":
            for v in value if isinstance(value, (tuple, list)) else [value]:
                argv += [flag, str(v)]
    return argv


def _kv(pairs: tuple[str, ...]) -> tuple:
    """--attack-param key=value → typed (key, value) pairs (int, float, bool or str)."""
    out = []
    for item in pairs:
        if "=" not in item:
            raise FlbenchError(f"--attack-param {item!r}: expected key=value")
        k, v = item.split("=", 1)
        for cast in (int, float):
            try:
                v = cast(v)
                break
            except ValueError:
                continue
        else:
            v = {"true": True, "false": False}.get(v.lower(), v)
        out.append((k.strip().replace("-", "_"), v))
    return tuple(out)


@cli.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="registry name, local directory or HF id")
@click.option("--split", "split_text", default="2,2", show_default=True, help="P,Q: blocks in the client head and tail")
@click.option("--attack", "attack_name", default="learned-inversion", show_default=True, help="flbench ls attacks")
@click.option("--attack-param", "attack_params", multiple=True, help="attack parameter key=value (repeatable)")
@click.option("--data", default="private-records", show_default=True, help="victim corpus: private-records, enron")
@click.option("--data-file", default=None, help="victim texts: one per line, or JSONL with a 'text' field")
@click.option("--aux-data", default="xsum,sst2", show_default=True, help="public auxiliary corpora (comma-separated)")
@click.option("--aux-limit", type=int, default=2000, show_default=True, help="auxiliary texts per corpus")
@click.option("--limit", type=int, default=50, show_default=True, help="victim examples")
@click.option("--max-length", type=int, default=64, show_default=True, help="victim tokens per example")
@_wire_options
@_defense_options
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def attack(model, split_text, attack_name, attack_params, data, data_file, aux_data, aux_limit, limit, max_length,
           wire_dtype, as_json, **defense_opts) -> None:
    """Attack the traffic the server saw on victim data; score recovery with 95% bootstrap CIs."""
    from flbench.pipeline.attack import AttackConfig, run_attack

    for name, v in (("--limit", limit), ("--aux-limit", aux_limit), ("--max-length", max_length)):
        if v < 1:
            raise FlbenchError(f"{name} {v}: must be a positive integer")
    cfg = AttackConfig(model=model, split=split_text, attack=attack_name, attack_params=_kv(attack_params),
                       data=data, data_file=data_file, limit=limit, max_length=max_length, wire_dtype=wire_dtype,
                       aux_data=tuple(a.strip() for a in aux_data.split(",") if a.strip()), aux_limit=aux_limit,
                       seed=defense_opts["seed"])
    defense, gen = _make_defense(**defense_opts)
    res = run_attack(cfg, defense, gen)

    def human(o):
        click.echo(f"{o['attack']} on {o['model']} --split {o['split']}, defense {o['defense']} "
                   f"{o['defense_params']}, SNR {o['snr']}, n={o['n']}")
        click.echo(f"{'metric':16s} {'mean':>7s} {'95% CI':>17s}")
        for k, v in o["metrics"].items():
            if v["mean"] is None:
                click.echo(f"{k:16s} {'n/a':>7s}")
            else:
                click.echo(f"{k:16s} {v['mean']:7.3f}   [{v['ci_low']:.3f}, {v['ci_high']:.3f}]")
        for ex in o["examples"]:
            click.echo(f"\n  original : {ex['original']}\n  recovered: {ex['recovered']}")
        click.echo(f"\nfit {o['seconds']['fit']:.1f} s, invert {o['seconds']['invert']:.1f} s")

    _emit(res, as_json, human)


@cli.group()
def bench() -> None:
    """Performance benchmarks: ratios measured side by side in one run."""


@bench.command("inference")
@click.option("--model", default=DEFAULT_MODEL, show_default=True)
@click.option("--split", "split_text", default="2,2", show_default=True)
@click.option("--prompt-tokens", type=int, default=128, show_default=True)
@click.option("--new-tokens", type=int, default=128, show_default=True)
@click.option("--batch-sizes", default="1,4", show_default=True, help="comma-separated")
@click.option("--repeats", type=int, default=2, show_default=True, help="timed repeats per mode (median)")
@click.option("--out", default=None, help="also write the JSON result here (e.g. results/bench/inference.json)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def bench_inference_cmd(model, split_text, prompt_tokens, new_tokens, batch_sizes, repeats, out, as_json) -> None:
    """Centralized vs split KV-cached vs split naive generation tokens/s."""
    from flbench.pipeline.bench import bench_inference, write_result

    try:
        sizes = [int(x) for x in batch_sizes.split(",") if x.strip()]
    except ValueError:
        raise FlbenchError(f"--batch-sizes {batch_sizes!r}: expected comma-separated positive integers") from None
    for name, v in (("--prompt-tokens", prompt_tokens), ("--new-tokens", new_tokens), ("--repeats", repeats)):
        if v < 1:
            raise FlbenchError(f"{name} {v}: must be a positive integer")
    if not sizes or min(sizes) < 1:
        raise FlbenchError(f"--batch-sizes {batch_sizes!r}: expected comma-separated positive integers")
    res = bench_inference(model, split_text, prompt_tokens, new_tokens, sizes, repeats)
    write_result(res, out, _invocation())

    def human(o):
        for r in o["results"]:
            t = r["tokens_per_s"]
            click.echo(f"batch {r['batch']}: centralized {t['centralized']:.1f} tok/s, split kv {t['kv-cache']:.1f}, "
                       f"split naive {t['naive']:.1f}; kv/centralized {r['ratio_kv_over_centralized']:.2f}, "
                       f"kv/naive {r['ratio_kv_over_naive']:.2f}, identical tokens: {r['tokens_identical']}")

    _emit(res, as_json, human)


@bench.command("training")
@click.option("--model", default=DEFAULT_MODEL, show_default=True)
@click.option("--split", "split_text", default="2,2", show_default=True)
@click.option("--batch", type=int, default=4, show_default=True)
@click.option("--seq-len", type=int, default=128, show_default=True)
@click.option("--steps", type=int, default=5, show_default=True, help="timed steps (median)")
@click.option("--out", default=None, help="also write the JSON result here (e.g. results/bench/training.json)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def bench_training_cmd(model, split_text, batch, seq_len, steps, out, as_json) -> None:
    """Split LoRA training step vs the unsplit model's step, side by side."""
    from flbench.pipeline.bench import bench_training, write_result

    for name, v in (("--batch", batch), ("--seq-len", seq_len), ("--steps", steps)):
        if v < 1:
            raise FlbenchError(f"{name} {v}: must be a positive integer")
    res = bench_training(model, split_text, batch, seq_len, steps)
    write_result(res, out, _invocation())

    def human(o):
        t = o["seconds_per_step_median"]
        click.echo(f"split {t['split']:.3f} s/step, centralized {t['centralized']:.3f} s/step "
                   f"(ratio {o['ratio_split_over_centralized_time']:.2f}); wire {o['wire_bytes_per_step']} B/step")

    _emit(res, as_json, human)


@cli.command("eval")
@click.option("--task", "task_name", required=True, help="flbench ls tasks")
@click.option("--model", default=None, help=f"registry name, local directory or HF id [default: {DEFAULT_MODEL}, "
              "or the --checkpoint's model]")
@click.option("--checkpoint", default=None, type=click.Path(file_okay=False),
              help="directory written by flbench train --out (LoRA adapters per part + run.json)")
@click.option("--split", "split_text", default=None, help="P,Q: blocks in the client head and tail [default: 2,2, "
              "or the --checkpoint's split]")
@click.option("--centralized", is_flag=True, help="score the unsplit model instead (same examples, same scoring)")
@click.option("--limit", type=int, default=None, help="score only the first N eval examples")
@click.option("--batch-size", type=int, default=8, show_default=True, help="sequences per forward")
@click.option("--data-dir", default=None, help="local data directory (default: $FLBENCH_DATA_DIR, ../shared/data)")
@_wire_options
@_defense_options
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def eval_cmd(task_name, model, checkpoint, split_text, centralized, limit, batch_size, data_dir, wire_dtype, as_json,
             **defense_opts) -> None:
    """Task utility through the split (defense on the wire): log-likelihood of verbalised answers for choice
    tasks, KV-cached split generation + ROUGE / CoQA F1 for generative ones."""
    from flbench.pipeline.utility import evaluate, read_checkpoint, summary_line
    from flbench.models import load_model
    from flbench.tasks import get_task

    task = get_task(task_name)
    for name, v in (("--limit", limit), ("--batch-size", batch_size)):
        if v is not None and v < 1:
            raise FlbenchError(f"{name} {v}: must be a positive integer")
    meta = read_checkpoint(checkpoint) if checkpoint else None
    model = model or (meta["model"].get("name") if meta else None) or DEFAULT_MODEL
    split_text = split_text or (meta["split"] if meta else "2,2")
    spec = _split(split_text)
    defense, gen = _make_defense(**defense_opts)
    if centralized and defense.name != "none":
        raise FlbenchError(f"--centralized runs the unsplit model: there is no wire for --defense {defense.name}")
    task.load("eval", data_dir, limit)  # fail on missing data before loading the model
    loaded = load_model(model)
    res = evaluate(task, loaded, None if centralized else spec, defense, gen, limit, batch_size, data_dir,
                   wire_dtype, checkpoint, progress=True, summary=as_json)
    if not centralized:
        res["defense_stats"] = defense.stats()

    _emit(res, as_json, lambda o: click.echo(summary_line(o)))


from flbench.cli import results as cli_results  # noqa: E402  (registers run, sweep, leaderboard, plot)

cli_results.register(cli)


def main(argv: list[str] | None = None) -> None:
    try:
        rv = cli.main(args=argv, prog_name="flbench", standalone_mode=False)
    except FlbenchError as e:
        click.echo(f"flbench: error: {e}", err=True)
        sys.exit(2)
    except _NO_ARGS as e:  # bare `flbench`: show the help
        click.echo(e.format_message(), err=True)
        sys.exit(2)
    except click.ClickException as e:
        msg = " ".join(e.format_message().split())
        click.echo(f"flbench: error: {msg}", err=True)
        sys.exit(2)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("flbench: aborted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
