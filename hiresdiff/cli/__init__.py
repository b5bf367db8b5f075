"""The ``hiresdiff`` command line, a thin layer over the Python API.

``generate`` (the main job) and ``upscale`` are in :mod:`hiresdiff.cli.generate`, ``batch`` in
:mod:`hiresdiff.cli.batch`; ``data``, the training commands, ``bench`` and ``ui`` in :mod:`hiresdiff.cli.tools`;
``plan`` in :mod:`hiresdiff.cli.plan`. Every bad option gets a one-line error and exit status 2, before any model
loads; a bad option value (a name, a count, a range, a size, --out's folder) before torch loads at all
(:mod:`hiresdiff.cli.choices`), as ``--help`` is answered.

Why the command modules import torch and the library inside their functions, and nowhere else in the package does:
so that ``--help`` and a refused option answer in a fraction of a second, without loading torch.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Optional

from hiresdiff.checks import first_line
from hiresdiff.cli import batch, generate, plan, tools


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser; the training commands get their options (whose modules load torch) only when ``command`` is
    one of them or ``None`` (every command complete)."""
    parser = argparse.ArgumentParser(
        prog="hiresdiff",
        description="Generate above the trained resolution of diffusion models.",
        epilog="--debug (anywhere on the line): show the traceback of a failure",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    generate.add_generate_parser(sub)
    generate.add_upscale_parser(sub)
    batch.add_batch_parser(sub)
    tools.add_data_parser(sub)
    for training in tools.TRAINING_COMMANDS:
        tools.add_training_parser(sub, training, with_options=command in (None, training))
    tools.add_bench_parser(sub)
    plan.add_plan_parser(sub)
    tools.add_ui_parser(sub)
    return parser


def main(argv=None) -> int:
    """Run one command; its exit status. Every failure ends in one line on stderr: a bad input or a file problem exit
    2, Ctrl-C (at any moment, also while modules load) exit 130, anything else, a bug, exit 1 (``--debug`` shows its
    traceback). argparse's own exits (``--help``: 0, its usage errors: 2) are returned too, not raised, so that a caller
    in the same process (the tests) gets every status the same way. The process is left as found: the SIGINT handler
    set here is put back."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    interrupted = []

    def on_interrupt(signum, frame):  # remembered: a library interrupted mid-import may turn it into another error
        interrupted.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        command = next((a for a in argv if not a.startswith("-")), "")
        args = build_parser(command).parse_args(argv)
        args.argv = argv  # the command line as given (not sys.argv: main may be called in-process)
        args.run(args)
    except SystemExit as exit:  # argparse: --help, or a usage error it has already printed
        if exit.code is None or isinstance(exit.code, int):
            return exit.code or 0
        print(exit.code, file=sys.stderr)  # sys.exit("message"), as the interpreter would show it
        return 1
    except KeyboardInterrupt:
        print("hiresdiff: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if interrupted:
            print("hiresdiff: interrupted", file=sys.stderr)
            return 130
        if debug:
            raise
        message = first_line(error)
        if isinstance(error, (ValueError, OSError)):  # a bad input or a file problem
            print(f"hiresdiff: error: {message}", file=sys.stderr)
            return 2
        print(  # a bug
            f"hiresdiff: internal error: {type(error).__name__}: {message} (run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0
