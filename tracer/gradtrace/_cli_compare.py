"""``gradtrace compare A B`` and ``gradtrace check RUN``.

Exit codes (usable in CI to guard a refactor of a training loop): 0 equivalent,
1 diverged (or not comparable), 2 error (unknown run, unreachable database or
server).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

COMPARE_EPILOG = """\
A and B are run names (the latest run of that name), run ids or unique id prefixes.
Records are read from --db URL, else $GRADTRACE_URL, else sqlite:///./gradtrace.db;
with --server URL they are read through the team server's REST API instead
(token from --token or $GRADTRACE_TOKEN).

Exit code: 0 equivalent, 1 diverged or not comparable, 2 error.

Examples:
  gradtrace compare fit tape-loop                       why do these two runs differ?
  gradtrace compare fit tape-loop --project digits --json
  gradtrace compare 3f2a9c 81bd04 --server http://gradtrace:8000 --token $TOKEN
  gradtrace compare --catalogue                         every finding kind and its fix
"""

CHECK_EPILOG = """\
Single-run findings of the same engine: a non-scalar loss handed to tape.gradient,
variables without gradients or never updated, training-dependent layers run in
inference mode, NaN/Inf, an optimizer re-created every step, broadcasting losses.

Examples:
  gradtrace check tape-loop
  gradtrace check tape-loop --json --db sqlite:///runs.db
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
    p.add_argument("--project", help="look runs up in this project only")
    p.add_argument("--json", action="store_true", help="print the report document as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="all evidence, info findings and skipped checks")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--db", metavar="URL", help="database URL or SQLite file (default: $GRADTRACE_URL or ./gradtrace.db)")
    src.add_argument("--server", metavar="URL", help="read through a gradtrace server's REST API")
    p.add_argument("--token", help="API token for --server (default $GRADTRACE_TOKEN)")


def _usage(msg: str) -> Exception:
    from gradtrace.cli import UsageError

    return UsageError(msg)


def _server(raw: str) -> str:
    from gradtrace._cli_source import server_url

    return server_url(raw, "--server")


def _http_get(base: str, path: str, params: dict[str, str], token: str | None) -> dict[str, Any]:
    url = base.rstrip("/") + path + ("?" + urllib.parse.urlencode(params) if params else "")
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 (user-given server URL)
            doc: dict[str, Any] = json.loads(resp.read().decode())
            return doc
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read().decode())
            msg = body.get("message") or body.get("detail")
        except (ValueError, AttributeError):
            msg = exc.reason
        raise _usage(f"server answered {exc.code}: {msg}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _usage(f"cannot reach {base}: {getattr(exc, 'reason', exc)}") from None


def _local(fn: Any, *refs: str, db: str | None, project: str | None) -> dict[str, Any]:
    from gradtrace._cli_source import open_db
    from gradtrace.compare.reader import read_run

    store = open_db(db, "--db", must_exist=False)
    try:
        runs = []
        for ref in refs:
            try:
                runs.append(read_run(store, ref, project))
            except LookupError as exc:
                raise _usage(str(exc)) from None
            except Exception as exc:
                if type(exc).__name__ in ("RunNotFound", "AmbiguousRun"):
                    raise _usage(str(exc)) from None
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


def cmd_compare(args: argparse.Namespace) -> int:
    if args.catalogue:
        from gradtrace.compare import as_markdown, catalogue

        sys.stdout.write((json.dumps(catalogue(), indent=2) if args.json else as_markdown()) + "\n")
        return 0
    if not args.a or not args.b:
        raise _usage("give two runs: gradtrace compare A B (see --help)")
    if args.server:
        server = _server(args.server)
        params = {"a": args.a, "b": args.b}
        if args.project:
            params["project"] = args.project
        doc = _http_get(server, "/api/v1/compare", params, args.token or os.environ.get("GRADTRACE_TOKEN"))
    else:
        from gradtrace.compare import compare_runs

        doc = _local(compare_runs, args.a, args.b, db=args.db, project=args.project)
    return _emit(doc, args)


def cmd_check(args: argparse.Namespace) -> int:
    if args.server:
        path = "/api/v1/runs/" + urllib.parse.quote(args.run, safe="") + "/check"
        doc = _http_get(_server(args.server), path, {}, args.token or os.environ.get("GRADTRACE_TOKEN"))
    else:
        from gradtrace.compare import check_run

        doc = _local(check_run, args.run, db=args.db, project=args.project)
    return _emit(doc, args)
