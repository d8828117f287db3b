"""Options and helpers shared by the command modules (no command lives here)."""
from __future__ import annotations

import json

import click

from flbench.core.errors import FlbenchError

DEFAULT_MODEL = "smollm2-135m"


def emit(obj: dict, as_json: bool, human) -> None:
    if as_json:
        click.echo(json.dumps(obj, indent=None, sort_keys=False))
    else:
        human(obj)


def parse_split_option(value: str):
    from splits.partition import parse_split

    return parse_split(value)


def wire_options(f):
    f = click.option("--wire-dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
                     help="dtype of tensors on the wire")(f)
    return f


def defense_options(f):
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


def defense_spec(defense, noise_sigma, noise_relative, dp_clip, noise_multiplier, dp_delta) -> dict:
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


def make_cli_defense(defense, noise_sigma, noise_relative, dp_clip, noise_multiplier, dp_delta, seed, secure_noise):
    """CLI options → (defense, generator)."""
    from defenses import make_defense, make_generator

    spec = defense_spec(defense, noise_sigma, noise_relative, dp_clip, noise_multiplier, dp_delta)
    d = make_defense(spec.pop("name"), **spec)
    gen = make_generator(seed=None if secure_noise else seed, secure=secure_noise)
    return d, gen


def invocation() -> list[str]:
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


def parse_kv(pairs: tuple[str, ...]) -> tuple:
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

