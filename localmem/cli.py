"""The ``localmem`` command. Commands are thin: the work lives in the package."""

from __future__ import annotations

import click

from localmem import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="localmem")
def main() -> None:
    """localmem: on-device memory for LLM assistants."""


@main.command()
def doctor() -> None:
    """Show the SIMD kernel, CPU, store location, and run a quick self-check."""
    from localmem.doctor import report

    if not report(click.echo):
        raise SystemExit(1)
