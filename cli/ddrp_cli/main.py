"""``ddrp``: the command-line front end. Each command module parses options and calls
ddrp_dask; this module only assembles the group."""

from __future__ import annotations

import click

import ddrp_dask

from .pipeline_commands import fit, project, run
from .use_commands import evaluate, matmul, plan_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ddrp_dask.__version__, prog_name="ddrp")
def cli() -> None:
    """Data-dependent random projections: sketches whose dot products estimate x . w."""


for _command in (fit, run, project, matmul, evaluate, plan_command):
    cli.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    cli()
