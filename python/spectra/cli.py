"""The ``spectra`` command line."""

from __future__ import annotations

import sys

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Mechanistic analysis of attention heads in HuggingFace transformers models."""


@main.command()
def info() -> None:
    """Versions, build flags, compiled backends and whether the native module loaded."""
    from spectra.info import main as info_main

    sys.exit(info_main())


@main.command()
@click.option("--model", default="tiny-llama", show_default=True, help="Zoo model name.")
@click.option("--seq-len", default=256, show_default=True, type=click.IntRange(min=1), help="Tokens per window.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--max-windows", default=None, type=click.IntRange(min=1), help="Use at most this many windows.")
def demo(model: str, seq_len: int, batch_size: int, max_windows: int | None) -> None:
    """Per-(layer, head) Q/K geometry of an embedded model on held-out text."""
    from spectra.demo import run_demo

    try:
        run_demo(model, seq_len=seq_len, batch_size=batch_size, max_windows=max_windows)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error
