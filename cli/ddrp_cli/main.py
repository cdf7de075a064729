"""``ddrp``: the command-line front end. Each command module parses options and calls
ddrp_dask; this module only assembles the group (and puts click's usage errors on one line).
"""

from __future__ import annotations

from typing import Any

import click

import ddrp_dask

from .pipeline_commands import fit, project, run
from .use_commands import evaluate, matmul, plan_command


class _Group(click.Group):
    """Click's group, with its usage errors (a missing or unknown option, a value that is
    not one of the choices, an unknown command) on one ``ddrp: error:`` line like every
    other error, exit status 2, instead of the usage, a hint and the error on four."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            where = (e.ctx or ctx).command_path
            msg = " ".join(e.format_message().split()).rstrip(".")
            click.echo(f"ddrp: error: {msg}; see '{where} --help'", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ddrp_dask.__version__, prog_name="ddrp")
def cli() -> None:
    """Data-dependent random projections: sketches whose dot products estimate x . w."""


for _command in (fit, run, project, matmul, evaluate, plan_command):
    cli.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    cli()
