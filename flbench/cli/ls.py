"""`flbench ls`: list what is registered (registries imported lazily so `flbench --help` stays fast)."""
from __future__ import annotations

import click


@click.command("ls")
@click.argument("what", type=click.Choice(["models", "attacks", "defenses", "tasks"]))
def ls_cmd(what: str) -> None:
    """List what is registered."""
    for name, desc in listing(what):
        click.echo(f"{name:20s} {desc}")




def listing(what: str) -> list[tuple[str, str]]:
    if what == "models":
        from flbench.models import models

        return [(n, e.description) for n, e in models.items()]
    if what == "defenses":  # each class says what it is: family, flags, summary
        from defenses import defenses

        return [(n, f"[{cls.family}; {' '.join(f.flag for f in cls.cli_flags()) or 'no flags'}] {cls.summary()}")
                for n, cls in defenses.items()]
    if what == "attacks":  # each class says what it observes and the metric that ranks it
        from attacks import attacks

        return [(n, f"[observes {', '.join(sorted(cls.requires))}; {cls.primary_metric}] {cls.summary()}")
                for n, cls in attacks.items()]
    try:
        from flbench.tasks import tasks  # arrives with the task-utility work
    except ModuleNotFoundError:
        return []
    return [(n, (cls.__doc__ or "").strip().splitlines()[0]) for n, cls in tasks.items()]
