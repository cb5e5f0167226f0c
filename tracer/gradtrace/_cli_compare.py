"""``gradtrace compare A B`` and ``gradtrace check RUN``.

Exit codes (usable in CI to guard a refactor of a training loop): 0 equivalent,
1 diverged (or not comparable), 2 error (unknown run, unreachable database or
server).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

COMPARE_EPILOG = """\
A and B are run names (the latest run of that name), run ids or unique id prefixes.
Records are read from --db URL, else through the team server's REST API with
--server URL, else from $GRADTRACE_URL (an http(s):// address is read through that
server, as --server), else sqlite:///./gradtrace.db. A server's token comes from
--token or $GRADTRACE_TOKEN.

Exit code: 0 equivalent, 1 diverged or not comparable, 2 error.

Examples:
  gradtrace compare fit tape-loop                       why do these two runs differ?
  gradtrace compare fit tape-loop --project digits --json
  gradtrace compare 3f2a9c 81bd04 --server http://gradtrace:8000 --token $TOKEN
  gradtrace compare --catalogue                         every finding kind and its fix
"""

CHECK_EPILOG = """\
Single-run findings of the same engine, what one run shows by itself:
  - the loss: a non-scalar tensor handed to tape.gradient, labels and predictions
    broadcast to (N, N), arguments swapped (loss(pred, y)), a cross-entropy reading
    logits as probabilities (from_logits=False on a layer without activation,
    seen inside tf.function and fit()), regularization losses left out or added
    twice, a partial batch divided by the full batch's size, a regression output
    behind a relu/sigmoid/tanh that cannot reach its targets, a loss that the
    first updates make several times larger (a learning rate far too large);
  - the gradients: variables that never get one or only at some steps, zeros put
    in place of None, gradients paired with the wrong variables, computed and
    never used, NaN/Inf;
  - the steps: training-dependent layers in inference mode, layers run in training
    mode outside the steps, an optimizer or model re-created in the loop, a step
    applied twice per batch, a metric that does not fit the labels;
  - the data: the same batch at every step (next(iter(ds)) in the loop), batches
    of one class each (data sorted by label, never shuffled).
What needs a second run to tell (another optimizer setting, a learning rate
that trains but differs, initial weights, a different loss class) is
`gradtrace compare A B`'s.

Records are read as for compare: --db URL, --server URL, else $GRADTRACE_URL
(http(s):// reads through that server), else ./gradtrace.db.

Examples:
  gradtrace check tape-loop
  gradtrace check tape-loop --json --db sqlite:///runs.db
  GRADTRACE_URL=http://gradtrace:8000 GRADTRACE_TOKEN=$TOKEN gradtrace check tape-loop
"""


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the ``compare`` and ``check`` commands."""
    fmt = argparse.RawDescriptionHelpFormatter
    c = sub.add_parser(
        "compare", help="explain why two runs diverge",
        description="Align two traced runs step by step and explain why they diverge: verdict, "
                    "first divergent step, findings ranked by how much they explain, each with "
                    "evidence and a fix.",
        epilog=COMPARE_EPILOG, formatter_class=fmt)
    c.add_argument("a", nargs="?", help="first run (e.g. the fit() run)")
    c.add_argument("b", nargs="?", help="second run (e.g. the tape loop)")
    c.add_argument("--catalogue", action="store_true", help="print the finding catalogue and exit")
    _common(c)
    c.set_defaults(func=cmd_compare)
    k = sub.add_parser(
        "check", help="single-run findings", description="Findings about one run alone.",
        epilog=CHECK_EPILOG, formatter_class=fmt)
    k.add_argument("run", help="run name, id or unique id prefix")
    _common(k)
    k.set_defaults(func=cmd_check)


def _common(p: argparse.ArgumentParser) -> None:
    from gradtrace._cli_source import add_source_args

    p.add_argument("--project", help="look runs up in this project only")
    p.add_argument("--json", action="store_true", help="print the report document as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="all evidence, info findings and skipped checks")
    add_source_args(p)


def _usage(msg: str) -> Exception:
    from gradtrace.cli import UsageError

    return UsageError(msg)


def _local(fn: Any, *refs: str, db: str | None, project: str | None) -> dict[str, Any]:
    from gradtrace._cli_source import open_db
    from gradtrace.compare.reader import read_run

    store = open_db(db, "--db")
    try:
        runs = []
        for ref in refs:
            try:
                runs.append(read_run(store, ref, project))
            except LookupError as exc:
                raise _usage(f"{exc}. List runs with: gradtrace runs") from None
            except Exception as exc:
                if type(exc).__name__ in ("RunNotFound", "AmbiguousRun"):
                    raise _usage(f"{exc}. List runs with: gradtrace runs") from None
                raise
        doc: dict[str, Any] = fn(*runs).to_dict()
        return doc
    finally:
        store.close()


def _emit(doc: dict[str, Any], args: argparse.Namespace) -> int:
    from gradtrace.compare.report import exit_code, render_text, to_json

    out = to_json(doc) if args.json else render_text(doc, verbose=args.verbose)
    sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return exit_code(doc)


def _remote(path: str, params: dict[str, str], server: str, args: argparse.Namespace) -> dict[str, Any]:
    from gradtrace._cli_remote import http_get
    from gradtrace._cli_source import token
    from gradtrace.store import StoreError

    try:
        doc: dict[str, Any] = http_get(server, path, params, token(args.token))
    except StoreError as exc:  # 404: an unknown run
        raise _usage(str(exc).removeprefix("query.a: ").removeprefix("query.b: ")) from None
    return doc


def cmd_compare(args: argparse.Namespace) -> int:
    from gradtrace._cli_source import remote_server

    if args.catalogue:
        from gradtrace.compare import as_markdown, catalogue

        sys.stdout.write((json.dumps(catalogue(), indent=2) if args.json else as_markdown()) + "\n")
        return 0
    if not args.a or not args.b:
        raise _usage("give two runs: gradtrace compare A B (see --help)")
    server = remote_server(args.db, args.server)
    if server:
        params = {"a": args.a, "b": args.b}
        if args.project:
            params["project"] = args.project
        doc = _remote("/api/v1/compare", params, server, args)
    else:
        from gradtrace.compare import compare_runs

        doc = _local(compare_runs, args.a, args.b, db=args.db, project=args.project)
    return _emit(doc, args)


def cmd_check(args: argparse.Namespace) -> int:
    from gradtrace._cli_source import remote_server

    server = remote_server(args.db, args.server)
    if server:
        doc = _remote("/api/v1/runs/" + urllib.parse.quote(args.run, safe="") + "/check", {}, server, args)
    else:
        from gradtrace.compare import check_run

        doc = _local(check_run, args.run, db=args.db, project=args.project)
    return _emit(doc, args)
