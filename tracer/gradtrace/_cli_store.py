"""``gradtrace runs``, ``gradtrace show RUN`` and ``gradtrace db upgrade|current|check``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING, Any

from gradtrace.cli import UsageError

if TYPE_CHECKING:
    from gradtrace._cli_remote import RemoteStore
    from gradtrace.store import Store

_DB_HELP = "database URL or SQLite path (default: $GRADTRACE_URL, else sqlite:///./gradtrace.db)"

_SOURCE = """\
Records are read from --db URL, else through a gradtrace server with --server URL,
else from $GRADTRACE_URL: an http(s):// address (a training script's team-server
setting) is read through that server's REST API, token from --token or
$GRADTRACE_TOKEN; anything else is a database. Default: sqlite:///./gradtrace.db.
"""

RUNS_EPILOG = _SOURCE + """
Examples:
  gradtrace runs                             runs in ./gradtrace.db, newest first
  gradtrace runs --project digits --json     as JSON (one object per run)
  gradtrace runs --db postgresql://user@host/gradtrace --status failed
  gradtrace runs --server http://gradtrace.team:8000 --token $TOKEN
"""

SHOW_EPILOG = _SOURCE + """
RUN is a run name (the latest run of that name), a run id, or a unique id prefix.

Columns: step, loss (as computed inside the step), lr, |g| (global gradient norm
over all variables), grads (variables that received a gradient / recorded),
applied (variables the optimizer changed), state (non-trainable variables that
changed, RNG state excluded), modes (layers that ran with training=True/False),
nonfinite (NaN/Inf gradient entries). A '-' in |g|, applied, state or nonfinite
on a step with grads set: not measured there. The per-variable statistics are
measured on a warm-up and then on every N-th step, N chosen to keep them within the
overhead budget (trace(stats_every=1) measures every step).

Examples:
  gradtrace show fit                         every step of the latest run named 'fit'
  gradtrace show fit --steps 0:20            steps 0..19
  gradtrace show 3f2a --steps 100: --json    run by id prefix, from step 100, as JSON
  gradtrace show tape-loop --vars 0,1        JSON/vars output limited to variables 0 and 1
"""

DB_EPILOG = """\
A traced script and the server create and upgrade SQLite files automatically;
`db upgrade` creates one explicitly. Every other command refuses a SQLite file that
does not exist (a typo in --db creates nothing). A PostgreSQL database is upgraded
explicitly (the server refuses to start on an old schema).

Examples:
  gradtrace db upgrade --db postgresql://postgres@127.0.0.1:5432/gradtrace
  gradtrace db current --db runs.db
  gradtrace db upgrade --db team.db          create an empty SQLite database (e.g. for tokens)
  gradtrace db check --db postgresql://...   exit code 0 if up to date, 2 if not
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``runs``, ``show`` and ``db`` to the ``gradtrace`` command."""
    from gradtrace._cli_source import add_source_args

    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "runs",
        help="list traced runs",
        description="List traced runs, newest first.",
        epilog=RUNS_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("--project", help="only this project")
    p.add_argument("--name", help="only runs with this name")
    p.add_argument("--status", choices=("running", "finished", "failed"))
    p.add_argument("--limit", type=int, default=50, help="at most this many runs (default 50)")
    add_source_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_runs)

    p = subparsers.add_parser(
        "show",
        help="per-step table of one run",
        description="Print what was recorded at every optimizer step of one run.",
        epilog=SHOW_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("run", metavar="RUN", help="run name, id or id prefix")
    p.add_argument("--project", help="resolve RUN within this project")
    p.add_argument("--steps", metavar="A:B", help="step range, A inclusive, B exclusive (A:, :B, or N)")
    p.add_argument("--vars", metavar="I,J,...", help="variable indices to include (JSON output)")
    add_source_args(p)
    p.add_argument("--json", action="store_true", help="print JSON (NaN/Inf as strings)")
    p.set_defaults(func=cmd_show)

    p = subparsers.add_parser(
        "db",
        help="database schema: upgrade, current, check",
        description="Manage the store's schema (Alembic migrations shipped with gradtrace).",
        epilog=DB_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("action", choices=("upgrade", "current", "check"))
    p.add_argument("--db", help=_DB_HELP)
    p.add_argument("--revision", default="head", help="upgrade target (default: head)")
    p.set_defaults(func=cmd_db)


def _open(url: str | None, *, must_exist: bool = True, check_schema: bool = True) -> Store:
    from gradtrace._cli_source import open_db

    return open_db(url, "--db", must_exist=must_exist, check_schema=check_schema)


def _open_read(args: argparse.Namespace) -> Store | RemoteStore:
    """The records ``runs``/``show`` read: a database, or a server's REST API."""
    from gradtrace._cli_remote import RemoteStore
    from gradtrace._cli_source import remote_server, token

    server = remote_server(args.db, args.server)
    if server:
        return RemoteStore(server, token(args.token))
    return _open(args.db)


def _echo(text: str, file: Any = None) -> None:
    """One line of command output (stdout unless ``file``)."""
    (file or sys.stdout).write(text + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(type(obj).__name__)


def _dumps(obj: Any) -> str:
    from gradtrace.store._ingest import json_safe

    return json.dumps(json_safe(obj), default=_json_default, allow_nan=False)


def _fmt_time(dt: Any) -> str:
    return "-" if dt is None else dt.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    right = right or set()
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def cmd_runs(args: argparse.Namespace) -> int:
    from gradtrace.store import StoreError

    with _open_read(args) as store:
        try:
            page = store.runs(args.project, name=args.name, status=args.status, limit=args.limit)
        except StoreError as exc:
            raise UsageError(str(exc)) from None
        if args.json:
            _echo(_dumps([r.model_dump() for r in page.items]))
            return 0
        if not page.items:
            _echo("no runs" + (f" in project {args.project!r}" if args.project else "") + f" ({store.url})")
            return 0
        rows = [
            [
                r.name,
                r.id[:12],
                r.project,
                r.status + (" (partial)" if r.partial else ""),
                str(r.num_steps),
                _fmt_time(r.started_at),
                "-" if r.duration_s is None else f"{r.duration_s:.1f}s",
                r.keras_flavour or "-",
                r.execution_mode or "-",
            ]
            for r in page.items
        ]
        _echo(
            _table(
                ["NAME", "ID", "PROJECT", "STATUS", "STEPS", "STARTED", "DURATION", "KERAS", "MODE"],
                rows,
                {4, 6},
            )
        )
        if page.total > len(page.items):
            _echo(f"({len(page.items)} of {page.total} runs; --limit N for more)")
    return 0


def parse_steps(text: str | None) -> tuple[int, int | None]:
    """``"A:B"`` / ``"A:"`` / ``":B"`` / ``"N"`` -> (start, stop)."""
    if not text:
        return 0, None
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            start = int(a) if a.strip() else 0
            stop = int(b) if b.strip() else None
        else:
            start = int(text)
            stop = start + 1
    except ValueError:
        raise UsageError(f"--steps {text!r}: expected A:B with integers, e.g. 0:100") from None
    if start < 0 or (stop is not None and stop < start):
        raise UsageError(f"--steps {text!r}: need 0 <= A <= B")
    return start, stop


def _parse_vars(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        vs = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--vars {text!r}: expected comma-separated variable indices, e.g. 0,1,4") from None
    if any(v < 0 for v in vs):
        raise UsageError("--vars: indices are >= 0")
    return vs


def _num(x: float | None, fmt: str = ".5g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if x != x else ("inf" if x > 0 else "-inf")
    return format(x, fmt)


def _modes(modes: dict[str, Any] | None) -> str:
    if not modes:
        return "-"
    t = sum(1 for v in modes.values() if v is True)
    f = sum(1 for v in modes.values() if v is False)
    n = len(modes) - t - f
    parts = [f"train {t}"] if t else []
    parts += [f"infer {f}"] if f else []
    parts += [f"unset {n}"] if n else []
    return ", ".join(parts)


def _echo_lost(lost: dict[str, Any]) -> None:
    """Every kind of lost record the run counted, with the setting that avoids it."""
    from gradtrace._config import lost_hint, lost_steps

    steps = lost_steps(lost)
    tensors = {k: int(v) for k, v in lost.items() if v and k not in steps}
    for what, counts in (("steps were", steps), ("full tensors were", tensors)):
        if counts:
            _echo(f"warning: {sum(counts.values())} {what} not recorded (lost):")
            for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]):
                _echo(f"  {reason} {n}: {lost_hint(reason)}")


def cmd_show(args: argparse.Namespace) -> int:
    from gradtrace.store import StoreError

    start, stop = parse_steps(args.steps)
    vs = _parse_vars(args.vars)
    with _open_read(args) as store:
        try:
            run = store.resolve(args.run, args.project)
        except StoreError as exc:
            raise UsageError(f"{exc}. List runs with: gradtrace runs") from None
        if args.json:
            detail = store.run_detail(run.id)
            out = sys.stdout
            out.write('{"run": ' + _dumps(detail.summary.model_dump()) + ', "meta": ' + _dumps(detail.meta))
            out.write(', "variables": ' + _dumps(detail.variables) + ', "steps": [')
            for i, rec in enumerate(store.steps(run.id, start, stop, vars=vs)):
                out.write((", " if i else "") + _dumps(rec))
            out.write("]}\n")
            return 0
        detail = store.run_detail(run.id)
        nvars = sum(1 for v in detail.variables if v.get("trainable"))
        dur = "-" if run.duration_s is None else f"{run.duration_s:.1f}s"
        _echo(f"run {run.name}  id {run.id}  project {run.project}")
        _echo(
            f"status {run.status}{' (partially traced)' if run.partial else ''}  steps {run.num_steps}  "
            f"keras {run.keras_flavour or '-'}  mode {run.execution_mode or '-'}  "
            f"started {_fmt_time(run.started_at)}  duration {dur}"
        )
        for w in detail.meta.get("warnings") or []:
            _echo(f"warning: {w}")
        _echo_lost(detail.meta.get("lost") or {})
        fields = [
            "loss",
            "lr",
            "grad_norm",
            "n_grad",
            "n_applied",
            "n_changed",
            "modes",
            "nonfinite",
            "skipped",
        ]
        rows = []
        sampled = False  # a step between two measured ones
        for rec in store.steps(run.id, start, stop, fields=fields):
            grads = "-" if rec["n_grad"] is None else f"{rec['n_grad']}/{nvars or '?'}"
            sampled = sampled or (rec["grad_norm"] is None and rec["n_applied"] is None and rec["n_grad"] is not None)
            rows.append(
                [
                    str(rec["step"]),
                    _num(rec["loss"]),
                    _num(rec["lr"], ".3g"),
                    _num(rec["grad_norm"]),
                    grads,
                    _num(rec["n_applied"], "d"),
                    _num(rec["n_changed"], "d"),
                    _modes(rec["modes"]),
                    _num(rec["nonfinite"], "d") + (" skipped" if rec["skipped"] else ""),
                ]
            )
        if not rows:
            _echo("no steps recorded" + (" in that range" if args.steps else ""))
            return 0
        _echo(
            _table(
                ["STEP", "LOSS", "LR", "|G|", "GRADS", "APPLIED", "STATE", "MODES", "NONFINITE"],
                rows,
                {0, 1, 2, 3, 5, 6, 8},
            )
        )
        if sampled:
            _echo("- : not measured on that step; per-variable statistics are measured on a warm-up and then "
                  "every N-th step, N set from their measured cost (trace(stats_every=1) measures every step)")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from gradtrace.store import StoreError

    # only `upgrade` creates a database; `current`/`check` of a typo'd path must not
    with _open(args.db, must_exist=args.action != "upgrade", check_schema=False) as store:
        try:
            current, head = store.schema_revision()
            if args.action == "current":
                state = "up to date" if current == head else "needs: gradtrace db upgrade"
                _echo(f"{store.url}: revision {current or '(empty)'}, head {head} ({state})")
                return 0
            if args.action == "check":
                if current == head:
                    _echo(f"{store.url}: schema up to date (revision {head})")
                    return 0
                _echo(
                    f"{store.url}: schema at {current or '(empty)'}, needs {head}. "
                    f"Run: gradtrace db upgrade --db {args.db or store.url}",
                    file=sys.stderr,
                )
                return 2
            before, after = store.upgrade(args.revision)
        except StoreError as exc:
            raise UsageError(str(exc)) from None
        except Exception as exc:  # a migration failing on this database
            raise UsageError(f"{args.action} failed on {store.url}: {exc}") from None
        if before == after:
            _echo(f"{store.url}: already at revision {after}")
        else:
            _echo(f"{store.url}: upgraded {before or '(empty)'} -> {after}")
    return 0
