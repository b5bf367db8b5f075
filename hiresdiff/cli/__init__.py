"""The ``hiresdiff`` command line, a thin layer over the Python API.

``generate`` (the main job) and ``upscale`` are in :mod:`hiresdiff.cli.generate`, ``batch`` in
:mod:`hiresdiff.cli.batch`; ``data``, ``train``,
``train-upsamplers``, ``bench`` and ``ui`` in :mod:`hiresdiff.cli.tools`. Every bad option gets a one-line error
and exit status 2, before any model loads.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from hiresdiff.cli import batch, generate, tools


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser; the training commands get their options (whose modules load torch) only when ``command`` is
    one of them or ``None`` (every command complete)."""
    parser = argparse.ArgumentParser(prog="hiresdiff", description="Generate above the trained resolution of diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True)
    generate.add_generate_parser(sub)
    generate.add_upscale_parser(sub)
    batch.add_batch_parser(sub)
    tools.add_data_parser(sub)
    tools.add_train_parser(sub, with_options=command in (None, "train"))
    tools.add_train_upsamplers_parser(sub, with_options=command in (None, "train-upsamplers"))
    tools.add_bench_parser(sub)
    tools.add_ui_parser(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), "")
    args = build_parser(command).parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"hiresdiff: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hiresdiff: interrupted", file=sys.stderr)
        return 130
    return 0
