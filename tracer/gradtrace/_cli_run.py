"""``gradtrace run``: trace a training script without editing it.

``gradtrace run train.py ARGS`` runs ``train.py`` as ``python train.py ARGS`` would
(``__name__ == "__main__"``, ``sys.argv``, the script's folder first on ``sys.path``),
inside one ``gradtrace.trace(run=...)`` scope, the way ``python -m cProfile`` or
``opentelemetry-instrument`` wrap a program. ``-m MODULE`` runs a module as ``python -m``.
The script's exit code is the command's; a script that raises is recorded as failed,
its traceback printed, exit code 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Any

RUN_EPILOG = """\
The script runs in this process, as `python SCRIPT ARGS` would, with every optimizer
step of its fit() calls, tape loops and custom train_steps recorded as one run. Nothing
in the script changes. Arguments after the script (or after -m MODULE) are the
script's own.

Examples:
  gradtrace run fit_version.py                     run named 'fit_version', ./gradtrace.db
  gradtrace run --name tape tape_version.py --epochs 3
  gradtrace run --project digits --store runs.db -m mypkg.train --lr 0.01
  gradtrace compare fit_version tape               then: why do the two differ?

Where records go: --store, else $GRADTRACE_URL, else sqlite:///./gradtrace.db (a
gradtrace server too: --store http://team:8000 with $GRADTRACE_TOKEN).
A script that calls gradtrace.trace itself records into its own runs as well
(nested scopes are separate runs). Exit code: the script's (1 when it raised).
"""


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the ``run`` command."""
    p = sub.add_parser(
        "run",
        help="run a training script with every optimizer step traced",
        description="Run a Python training script unchanged, recording it as one gradtrace run.",
        usage="gradtrace run [-h] [--name NAME] [--project P] [--store URL] [--stats-every N]\n"
              "                     (SCRIPT | -m MODULE) [ARGS ...]",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--name", metavar="NAME", help="run name (default: the script's or module's name)")
    p.add_argument("--project", metavar="P", help="project (default $GRADTRACE_PROJECT, else 'default')")
    p.add_argument("--store", metavar="URL",
                   help="where records go: SQLite file, database URL or http(s):// server "
                        "(default $GRADTRACE_URL, else ./gradtrace.db)")
    p.add_argument("--stats-every", type=int, metavar="N",
                   help="per-variable statistics on every N-th step (1: every step; default: chosen "
                        "from measured costs)")
    p.add_argument("-m", dest="module", nargs=argparse.REMAINDER, metavar="MODULE",
                   help="-m MODULE: run a module as `python -m MODULE` (its arguments follow)")
    p.add_argument("script", nargs="?", help="the training script (a .py file)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments")
    p.set_defaults(func=cmd_run)


def _target(args: argparse.Namespace) -> tuple[str, str | None, list[str]]:
    """(run name, script path or None for a module, the program's sys.argv)."""
    from gradtrace.cli import UsageError

    if args.module is not None:
        if args.script is not None:
            raise UsageError("give a script or -m MODULE, not both")
        if not args.module:
            raise UsageError("-m needs a module name, e.g. `gradtrace run -m mypkg.train`")
        module, rest = args.module[0], list(args.module[1:])
        return args.name or module.rpartition(".")[2], None, [module, *rest]
    if args.script is None:
        raise UsageError("name the training script to run, e.g. `gradtrace run train.py` (see --help)")
    path = Path(args.script)
    if not path.is_file():
        raise UsageError(f"no such script: {args.script}")
    return args.name or path.stem, str(path), [str(path), *args.args]


def cmd_run(args: argparse.Namespace) -> int:
    import runpy

    from gradtrace.cli import UsageError

    name, script, argv = _target(args)
    if args.stats_every is not None and args.stats_every < 1:
        raise UsageError(f"--stats-every must be 1 or more, not {args.stats_every}")
    options: dict[str, Any] = {}
    if args.stats_every is not None:
        options["stats_every"] = args.stats_every

    import gradtrace

    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    sys.argv = argv
    if script is not None:  # as `python script.py`: the script's folder comes first
        folder = os.path.dirname(os.path.abspath(script))
        if sys.path:
            sys.path[0] = folder
        else:
            sys.path.insert(0, folder)
    elif sys.path:  # as `python -m`: the working directory comes first
        sys.path[0] = os.getcwd()
    code: int = 0
    run = None
    try:
        with gradtrace.trace(run=name, project=args.project, store=args.store, **options) as run:
            try:
                if script is not None:
                    runpy.run_path(script, run_name="__main__")
                else:
                    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
            except SystemExit as exc:
                code = _exit_code(exc)
                if code:
                    raise  # the run is recorded as failed (SystemExit)
    except SystemExit:
        pass
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # the script's own error: recorded by trace, shown as Python would
        _print_traceback(exc)
        code = 1
    finally:
        sys.argv = saved_argv
        if saved_path0 is not None and sys.path:
            sys.path[0] = saved_path0
    if run is not None:
        _summary(run, name, args.store)
    return code


def _print_traceback(exc: BaseException) -> None:
    """The traceback from the script's own frames on, as ``python script.py`` prints it
    (this module's and runpy's frames left out)."""
    tb = exc.__traceback__
    while tb is not None and (tb.tb_frame.f_code.co_filename == __file__
                              or "runpy" in tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    sys.stderr.write(f"{exc.code}\n")  # sys.exit("message"), as the interpreter prints it
    return 1


def _summary(run: Any, name: str, store: str | None) -> None:
    if getattr(run.config, "disabled", False):
        sys.stderr.write("gradtrace: tracing is disabled (GRADTRACE_DISABLED): nothing was recorded\n")
        return
    info = run.info
    where = getattr(run.config, "url", "?")
    status = info.status if not info.error else f"{info.status} ({info.error})"
    partial = ", partially traced (see its warnings)" if info.partial else ""
    sys.stderr.write(f"gradtrace: run {name!r} ({info.run_id[:12]}): {run.steps_recorded} optimizer steps, "
                     f"{status}{partial}; records in {where}\n")
    if run.steps_recorded:
        src = f" --db {store}" if store else ""  # else both read $GRADTRACE_URL or ./gradtrace.db
        sys.stderr.write(f"gradtrace: see them with `gradtrace show {name}{src}`; compare with another run: "
                         f"`gradtrace compare OTHER {name}{src}`\n")
