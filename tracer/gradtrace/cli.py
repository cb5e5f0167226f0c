"""The ``gradtrace`` command line.

Each group of commands lives in its own module that exposes
``register(subparsers)``; this module only assembles them, so the CLI never
imports TensorFlow or FastAPI unless the chosen command needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# module name -> it registers these commands (listed here for the help text order)
_COMMAND_MODULES = (
    "gradtrace._cli_store",  # runs, show, db
    "gradtrace._cli_compare",  # compare, check
    "gradtrace._cli_server",  # serve, token
    "gradtrace._cli_spool",  # spool
    "gradtrace._cli_run",  # run
)

EPILOG = """\
Where records are: --db URL, else --server URL (a gradtrace server's REST API),
else $GRADTRACE_URL, else sqlite:///./gradtrace.db (the file a traced training
script writes by default). An http(s):// $GRADTRACE_URL is read through that
server, token from --token or $GRADTRACE_TOKEN.

Examples:
  gradtrace run train.py --epochs 3       run a script unchanged, every step traced
  gradtrace runs                          list the runs in ./gradtrace.db
  gradtrace show fit                      per-step table of the latest run named 'fit'
  gradtrace compare fit tape-loop         why do these two runs differ?
  gradtrace check tape-loop               single-run findings (e.g. a non-scalar loss)
  gradtrace serve --port 8000             the web UI and REST API on this machine
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradtrace",
        description="Inspect traced TensorFlow/Keras training runs and explain why two runs differ.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # a command group whose extra is not installed
            if exc.name and exc.name.startswith("gradtrace"):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `gradtrace runs | head`: the reader left. Point stdout at devnull so the
        # interpreter's final flush does not fail again (docs.python.org, signal: SIGPIPE).
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except UsageError as exc:
        print(f"gradtrace {args.command}: error: {exc}", file=sys.stderr)
        return 2


class UsageError(Exception):
    """A problem the user can fix; printed without a traceback, exit code 2."""


if __name__ == "__main__":
    sys.exit(main())
