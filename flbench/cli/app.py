"""The `flbench` group and `main()`: a user mistake is one line on stderr and exit status 2; an internal protocol
error on the split wire (WireError) is one line saying so and exit status 70."""
from __future__ import annotations

import sys

import click

from flbench.cli.attack import attack
from flbench.cli.bench import bench
from flbench.cli.calibrate import calibrate_cmd
from flbench.cli.client import client_cmd
from flbench.cli.eval import eval_cmd
from flbench.cli.generate import generate
from flbench.cli.leaderboard import leaderboard_cmd
from flbench.cli.ls import ls_cmd
from flbench.cli.plan import plan_cmd
from flbench.cli.plot import plot_cmd
from flbench.cli.repartition import repartition_cmd
from flbench.cli.run import run_cmd
from flbench.cli.serve import serve_cmd
from flbench.cli.sweep import sweep_cmd
from flbench.cli.train import train
from flbench.core.errors import FlbenchError, WireError

EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h): an internal error, not a user mistake (which exits 2)
_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flbench")
def cli() -> None:
    """flbench: privacy attacks and defenses in federated split learning (FL-LLaMA) of LLaMA-family models.

    A model is cut at --split P,Q into a client head (embedding + P blocks), a server trunk and a client
    tail (Q blocks + norm + LM head); the parties exchange real, counted messages.
    """


for _command in (ls_cmd, generate, train, attack, eval_cmd, bench, run_cmd, sweep_cmd, leaderboard_cmd, plot_cmd,
                 repartition_cmd, plan_cmd, calibrate_cmd, serve_cmd, client_cmd):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    try:
        rv = cli.main(args=argv, prog_name="flbench", standalone_mode=False)
    except WireError as e:  # not a user mistake: a bug or a corrupted transport between the parties
        click.echo(f"flbench: internal error: {e}", err=True)
        sys.exit(EXIT_INTERNAL)
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
