"""`flbench repartition`: a checkpoint trained at P,Q rewritten for P',Q' (adapters move with their blocks)."""
from __future__ import annotations

from pathlib import Path

import click

from flbench.cli.common import emit, parse_split_option


def _human(o: dict) -> None:
    click.echo(f"{o['checkpoint']} (split {o['from_split']}) → {o['out']} (split {o['split']}): "
               f"head blocks {o['blocks']['head']}, trunk {o['blocks']['trunk']}, tail {o['blocks']['tail']} "
               f"of {o['n_blocks']}; {o['adapter_tensors']} adapter tensors ({o['adapter_parameters']} parameters) "
               f"on blocks {','.join(map(str, o['adapted_blocks'])) or '-'}")
    for name, n in o["files"].items():
        click.echo(f"  {name}.safetensors: {n} tensors")


@click.command("repartition")
@click.option("--checkpoint", required=True, type=click.Path(file_okay=False),
              help="directory written by flbench train --out (or by repartition)")
@click.option("--split", "split_text", required=True, help="P',Q': the new blocks in the client head and tail")
@click.option("--out", required=True, type=click.Path(), help="new checkpoint directory")
@click.option("--client", type=click.IntRange(min=0), default=None,
              help="keep only this client's head/tail adapters (a one-client checkpoint); needed when blocks move "
                   "into the shared trunk and the clients trained them differently")
@click.option("--overwrite", is_flag=True, help="replace --out if it holds an earlier run")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def repartition_cmd(checkpoint, split_text, out, client, overwrite, as_json) -> None:
    """Move a checkpoint's LoRA adapters to another split: each block's adapters travel with the block between
    the client head, the server trunk and the client tail; nothing is retrained. The result loads like any
    flbench train checkpoint (flbench eval --checkpoint OUT)."""
    from flbench.core.errors import FlbenchError
    from flbench.pipeline.finetune import check_train_out
    from flbench.pipeline.repartition import moved_states, repartition
    from flbench.pipeline.utility import read_checkpoint

    spec = parse_split_option(split_text)
    meta = read_checkpoint(checkpoint)
    if Path(out).resolve() == Path(checkpoint).resolve():
        raise FlbenchError(f"--out {out}: is the --checkpoint itself; give a new directory")
    out_path = check_train_out(out, overwrite)
    moved_states(meta, checkpoint, spec, client=client)  # every refusal before anything is written
    emit(repartition(checkpoint, spec, out_path, client=client, overwrite=overwrite), as_json, _human)
