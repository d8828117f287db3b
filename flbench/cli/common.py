"""Options and helpers shared by the command modules (no command lives here)."""
from __future__ import annotations

import math

import click
from click.core import ParameterSource

from flbench.core.canonical import strict_json
from flbench.core.errors import FlbenchError
from flbench.pipeline.config import DEFAULT_MODEL, DEFAULT_SPLIT  # noqa: E402,F401 (the one place defaults live)

# click types for the options every command shares (click's own message names the option and the value)
POSITIVE_INT = click.IntRange(min=1)


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and ±inf (FloatRange lets nan through every bound)."""

    name = "finite float range"

    def convert(self, value, param, ctx):
        rv = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(rv, param, ctx)


class IntList(click.ParamType):
    """Comma-separated integers ≥ `min` ("1,4"), each with at most 9 digits."""

    name = "int list"

    def __init__(self, min: int = 1) -> None:
        self.min = min

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            return list(value)
        items = [x.strip() for x in str(value).split(",")]
        if not items or not all(x.isascii() and x.isdigit() and len(x) <= 9 and int(x) >= self.min for x in items):
            shown = value if len(str(value)) <= 40 else f"{str(value)[:30]}… ({len(str(value))} characters)"
            self.fail(f"{shown!r}: expected comma-separated integers ≥ {self.min} (e.g. 1,4).", param, ctx)
        return [int(x) for x in items]


def given(name: str) -> bool:
    """Was option `name` given explicitly (command line or environment), not left at its default?"""
    ctx = click.get_current_context()
    return ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def refuse_with(flag: str, active: bool, *names: str, why: str) -> None:
    """`flag` (when `active`) makes options `names` meaningless: refuse those given explicitly."""
    if not active:
        return
    ctx = click.get_current_context()
    for name in names:
        if given(name):
            opt = next(p for p in ctx.command.params if p.name == name)
            shown = opt.opts[0] if getattr(opt, "is_flag", False) else f"{opt.opts[0]} {ctx.params.get(name)}"
            raise FlbenchError(f"{shown} has no effect with {flag} ({why}); drop one of them")


def emit(obj: dict, as_json: bool, human) -> None:
    """--json: one strict JSON object on stdout (NaN/±inf → null); otherwise the human summary."""
    if as_json:
        click.echo(strict_json(obj))
    else:
        human(obj)


def parse_split_option(value: str):
    from splits.partition import parse_split

    return parse_split(value)


def wire_options(f):
    f = click.option("--wire-dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
                     help="dtype of tensors on the wire")(f)
    return f


DTYPE_HELP = ("compute dtype of the model parts (distinct from --wire-dtype, the tensors' dtype on the wire); "
              "fp16 and bf16 keep LoRA adapters in fp32 master weights")


def compute_options(parties: bool = True):
    """--dtype, --device and (with `parties`: commands that build a split) --client-device / --server-device."""
    def deco(f):
        opts = [click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
                             help=DTYPE_HELP),
                click.option("--device", default="cpu", show_default=True,
                             help="device of every party (and of the unsplit model): cpu, cuda, cuda:N, mps")]
        if parties:
            opts += [click.option("--client-device", default=None, help="device of the clients' head and tail "
                                                                        "[default: --device]"),
                     click.option("--server-device", default=None, help="device of the server's trunk "
                                                                        "[default: --device]")]
        for o in reversed(opts):
            f = o(f)
        return f
    return deco


def resolve_devices(device: str, client_device: str | None = None, server_device: str | None = None,
                    centralized: bool = False) -> dict:
    """Check every device against this machine (one line naming what is available) before any loading →
    {"device", "client_device", "server_device"}. --client/--server-device mean nothing without a split."""
    from splits.parts import check_device

    refuse_with("--centralized", centralized, "client_device", "server_device",
                why="the unsplit model runs on --device")
    dev = check_device(device, "--device")
    return {"device": dev,
            "client_device": check_device(client_device, "--client-device") if client_device else dev,
            "server_device": check_device(server_device, "--server-device") if server_device else dev}


# The client's outgoing edges a defense can be put on, and the option that puts it there. A defense declares
# its edges (`edges`, default ("h_a",)); each option offers every registered name (so a defense on the wrong
# edge gets a one-line refusal, not click's "invalid choice") but only the flags of the defenses that fit.
EDGE_OPTION = {"h_a": "--defense", "grad_b": "--grad-defense"}


def _edge_flag(flag: str, edge: str) -> str:
    """A defense's flag as the option set of `edge` names it: as declared on h_A; on the gradient edge with a
    "--grad-" prefix (unless the flag already has it, as grad-dp's do)."""
    if edge == "h_a" or flag.startswith("--grad-"):
        return flag
    return "--grad-" + flag[2:]


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _owners(edge: str) -> dict[str, list]:
    """CLI flag of `edge` -> [(defense name, CliFlag)], in registry order, for the defenses that fit the edge."""
    from defenses import defenses

    owners: dict[str, list] = {}
    for name, cls in defenses.items():
        if edge not in getattr(cls, "edges", ("h_a",)):
            continue
        for fl in cls.cli_flags():
            owners.setdefault(_edge_flag(fl.flag, edge), []).append((name, fl))
    return owners


def _edge_options(edge: str) -> list:
    from defenses import defenses

    owners = _owners(edge)
    option = EDGE_OPTION[edge]
    selecting = ", ".join(f"{flag}: {n}" for flag, decl in owners.items() for n, fl in decl if fl.selects)
    where = ("defense on the client's outgoing edge (the head's hidden states h_A)" if edge == "h_a" else
             "defense on the client's gradient edge (dL/dh_B, sent by the tail in training)")
    fits = ", ".join(n for n, c in defenses.items() if edge in getattr(c, "edges", ("h_a",)) and n != "none")
    opts = [click.option(option, type=click.Choice(defenses.names()), default=None,
                         help=f"{where} (flbench ls defenses; this edge takes {fits or 'none yet'}); default none"
                              + (f", or the defense a flag alone selects ({selecting})" if selecting else ""))]
    for flag, decl in owners.items():
        first = decl[0][1]
        if len({(fl.switch, fl.annotation) for _, fl in decl}) > 1:
            raise TypeError(f"defenses {', '.join(n for n, _ in decl)} declare {flag} with different types")
        text = "; ".join(f"{n}: {fl.help}" + ("" if fl.switch or fl.required else f" (default {fl.default!r})")
                         for n, fl in decl)
        if first.switch:
            opts.append(click.option(flag, is_flag=True, default=False, help=text))
        else:
            ann = first.annotation
            ctype = ({float: click.FLOAT, int: click.INT, str: click.STRING}.get(ann)
                     or click.Choice([str(a) for a in getattr(ann, "__args__", ())]))
            opts.append(click.option(flag, type=ctype, default=None, help=text))
    return opts


def defense_options(f):
    """--defense, the flags every registered defense for h_A declares on its parameters (field metadata
    "flag", "help"; see defenses/__init__.py), --seed and --secure-noise. Nothing here names a defense."""
    opts = _edge_options("h_a") + [
        click.option("--seed", type=int, default=0, show_default=True, help="seed for noise draws (benchmarks)"),
        click.option("--secure-noise", is_flag=True, help="seed the noise generator from the OS instead of --seed"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def grad_defense_options(f):
    """--grad-defense and the flags of the defenses that fit the gradient edge (a defense's flag "--x" reads
    "--grad-x" here unless it already starts with "--grad-"). Noise seeding: --seed / --secure-noise of
    `defense_options` (the gradient defense draws from its own stream of that seed)."""
    h_a = set(_owners("h_a"))
    clash = sorted(set(_owners("grad_b")) & h_a)
    if clash:
        raise TypeError(f"flag {clash[0]} is declared for both edges; a gradient-edge flag must be unique")
    for o in reversed(_edge_options("grad_b")):
        f = o(f)
    return f


def party_defense_options(f):
    """A client process's own defenses (`flbench client`, whose --seed is a job option): --defense and its
    flags, --secure-noise, --grad-defense and its flags."""
    f = grad_defense_options(f)
    f = click.option("--secure-noise", is_flag=True, help="seed the noise generators from the OS instead of --seed")(f)
    for o in reversed(_edge_options("h_a")):
        f = o(f)
    return f


def pop_grad_options(opts: dict) -> dict:
    """Remove the gradient-edge options (`grad_defense_options`) from a command's keyword arguments."""
    names = {"grad_defense"} | {_dest(flag) for flag in _owners("grad_b")}
    return {k: opts.pop(k) for k in list(opts) if k in names}


def _given(dest: str, value) -> bool:
    """Was option `dest` given (inside a command: not left at its default; outside: a value other than unset)?"""
    ctx = click.get_current_context(silent=True)
    src = ctx.get_parameter_source(dest) if ctx is not None else None
    if src is None:  # called outside a command: a value other than "unset" counts as given
        return value is not None and value is not False
    return src not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def _spec(edge: str, name: str | None, flag_values: dict) -> dict:
    """The defense chosen for `edge` by its option and flags → {"name": ..., **params} (see `defense_spec`)."""
    from defenses import defenses
    from flbench.core.params import check_params
    from splits.edges import check_edge

    option = EDGE_OPTION[edge]
    owners = _owners(edge)
    shown = [flag for flag in owners if _given(_dest(flag), flag_values.get(_dest(flag)))]
    if name is None:
        selected = sorted({n for flag in shown for n, fl in owners[flag] if fl.selects})
        if len(selected) > 1:
            raise FlbenchError(f"{', '.join(shown)} select several defenses ({', '.join(selected)}); "
                               f"choose one with {option}")
        name = selected[0] if selected else "none"
    cls = defenses.get(name)
    try:
        check_edge(cls, edge)
    except FlbenchError as e:
        raise FlbenchError(f"{option} {name}: {e}") from None
    mine = {_edge_flag(fl.flag, edge): fl for fl in cls.cli_flags()}
    for flag in shown:
        if flag not in mine:
            value = flag_values.get(_dest(flag))
            text = flag if value is True else f"{flag} {value}"
            raise FlbenchError(f"{text} does not apply to {option} {name} (it is a flag of "
                               f"{', '.join(n for n, _ in owners[flag])}); {option} {name} takes "
                               f"{', '.join(mine) or 'no flags'}")
    params = {}
    for flag, fl in mine.items():
        if flag in shown or fl.switch:
            value = bool(flag_values.get(_dest(flag))) if fl.switch else flag_values.get(_dest(flag))
            try:  # the defense's own validator; the message names the flag and the parameter
                check_params(f"defense {name!r}", cls, {fl.param: value}, partial=True)
            except FlbenchError:
                raise FlbenchError(f"{flag} {value!r} is not accepted ({fl.param} of {option} {name}: {fl.help}); "
                                   f"expected {fl.expected}") from None
            params[fl.param] = value
    for flag, fl in mine.items():  # bad values first, then what is missing
        if fl.required and fl.param not in params:
            raise FlbenchError(f"{option} {name} needs {flag} ({fl.help}: {fl.expected})")
    return {"name": name, **params}


def defense_spec(defense: str | None = None, seed: int | None = None, secure_noise: bool = False,
                 **flag_values) -> dict:
    """CLI defense options (as `defense_options` named them) → {"name": ..., **params}.

    Without --defense: "none", or the defense whose flag alone selects it (e.g. --noise-sigma → gaussian).
    Refused, in one line: a defense that does not declare the h_A edge (e.g. grad-dp: --grad-defense), a flag
    the chosen defense does not declare, a value its validator rejects, a required parameter left out
    (dp-forward's clip and noise multiplier have no silent defaults), and --seed given explicitly together
    with --secure-noise. Params are the flags given, plus the chosen defense's on/off switches (so
    `--noise-sigma 0.5` gives {"sigma": 0.5, "relative": False}). Other keyword arguments are ignored."""
    if secure_noise and seed is not None and _given("seed", seed):
        raise FlbenchError(f"--seed {seed} has no effect with --secure-noise (the noise generator is seeded from "
                           "the OS); drop one of them")
    return _spec("h_a", defense, flag_values)


def grad_defense_spec(grad_defense: str | None = None, **flag_values) -> dict:
    """CLI gradient-edge options (`grad_defense_options`) → {"name": ..., **params}, refused as `defense_spec`
    refuses (a defense that does not declare the gradient edge, e.g. gaussian: put it on --defense)."""
    return _spec("grad_b", grad_defense, flag_values)


def make_cli_defense(**defense_opts):
    """CLI defense options → (defense, generator)."""
    from defenses import make_defense, make_generator

    spec = defense_spec(**defense_opts)
    d = make_defense(spec.pop("name"), **spec)
    secure = bool(defense_opts.get("secure_noise"))
    gen = make_generator(seed=None if secure else defense_opts.get("seed", 0), secure=secure)
    return d, gen


def make_cli_grad_defense(seed: int = 0, secure_noise: bool = False, **grad_opts):
    """CLI gradient-edge options → (defense, generator), (None, None) for none; the generator draws from the
    gradient edge's own stream of --seed (flbench.pipeline.gradient.grad_seed), or the OS with --secure-noise."""
    from flbench.pipeline.gradient import grad_defense_and_generator

    spec = grad_defense_spec(**grad_opts)
    return grad_defense_and_generator(spec.pop("name"), spec, seed, secure=bool(secure_noise))


def invocation() -> list[str]:
    """The current command as a re-runnable argv, every option spelled out (for result files)."""
    ctx = click.get_current_context()
    argv = ctx.command_path.split()
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        flag = param.opts[0]
        if flag == "--json":  # how the result is shown, not what it is
            continue
        if isinstance(param, click.Option) and param.is_flag:
            if value:
                argv.append(flag)
        elif value is not None:
            if getattr(param, "multiple", False):
                for v in value:
                    argv += [flag, str(v)]
            else:
                argv += [flag, ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)]
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

