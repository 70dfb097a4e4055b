"""The `videothinker` command: one entry point, one subcommand per job.

Each subcommand lives in `videothinker.commands.<name>` as ``HELP`` (one line), ``DESCRIPTION``
(the --help text), ``add_arguments(parser)`` and ``run(args) -> int``. Commands only parse and call
library code; heavy imports (torch, transformers) happen inside ``run`` so that --help is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand name -> module under videothinker.commands, in the order --help lists them.
COMMANDS = {
    "demo": "demo",
    "study": "study",
    "train": "train",
    "eval": "evaluate",
    "score": "score",
    "report": "report",
    "lab": "lab",
    "data": "data",
    "tiny-model": "tiny_model",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videothinker",
        description="RL fine-tuning of lightweight video VLMs without perceptual shortcuts: "
        "bias-aware training + Causal Debiasing Policy Optimization (CDPO).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from videothinker import __version__

    parser.add_argument("--version", action="version", version=f"videothinker {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"videothinker.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"videothinker.commands.{module_name}":
                raise
            continue  # a command not built yet
        cmd = sub.add_parser(
            name,
            help=module.HELP,
            description=module.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "_run"):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # Bad input, and a run that cannot go on (a collapse, non-finite steps), reach the user as one
        # clear line, not a traceback from deep inside; anything else is a bug and keeps its traceback.
        if not isinstance(exc, ValueError | FileNotFoundError | KeyError) and not getattr(
            exc, "user_facing", False
        ):
            raise
        from videothinker.console import error

        error(str(exc) if not isinstance(exc, KeyError) else str(exc.args[0]))
        return 1


if __name__ == "__main__":
    sys.exit(main())
