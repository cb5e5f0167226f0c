"""``gradtrace spool``: batches waiting on disk because their destination was unreachable.

A traced run whose store or server could not be reached keeps its batches in
``$GRADTRACE_SPOOL_DIR`` (one folder per destination); the next run to the same
destination resends them. These commands show and resend them by hand.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

SPOOL_EPILOG = """\
Examples:
  gradtrace spool list                        what is waiting, per destination
  gradtrace spool flush                       resend everything to where it was going
  gradtrace spool flush --url http://team:8000 --token $TOKEN
                                              resend one destination (token for a server)
  gradtrace spool requeue --url http://team:8000
                                              put refused batches back, then flush

A batch the destination refused for good (e.g. HTTP 401, 422) is kept under the
destination's rejected/ folder with a .reason file beside it; flush says how many
were refused and why (exit code 1), does not resend them, and requeue puts them
back once the cause is fixed.

Exit code: 0 when everything was delivered, 1 when batches were refused or still wait.
"""


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the ``spool`` command (``list``, ``flush``)."""
    p = sub.add_parser(
        "spool",
        help="list or resend batches waiting on disk",
        description="Batches a traced run could not deliver wait in the spool directory until resent.",
        epilog=SPOOL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "action",
        choices=["list", "flush", "requeue"],
        help="list: show; flush: resend now; requeue: put refused batches back (e.g. after fixing a token)",
    )
    p.add_argument("--dir", metavar="PATH", help="spool directory (default $GRADTRACE_SPOOL_DIR or ~/.cache/gradtrace/spool)")
    p.add_argument("--url", metavar="URL", help="only this destination (default: every destination found)")
    p.add_argument("--token", metavar="TOKEN", help="API token for a server (default $GRADTRACE_TOKEN)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="give up after S seconds (default 60)")
    p.set_defaults(func=cmd_spool)


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")


def _destinations(root: Path, url: str | None) -> list[str]:
    from gradtrace._cli_source import database_url, is_server_url, server_url
    from gradtrace._config import normalize_url

    if url:
        if is_server_url(url):
            return [server_url(url, "--url")]
        database_url(url, "--url")  # checked only: the spool keys on the URL as the tracer wrote it
        return [normalize_url(url)]
    out = []
    for marker in sorted(root.glob("*/destination.txt")):
        dest = marker.read_text(encoding="utf-8").strip()
        if dest:
            out.append(dest)
    return out


def cmd_spool(args: argparse.Namespace) -> int:
    # Warnings go to stderr while the command runs; the handler is removed after it, so a
    # caller in the same process (a test, a notebook) keeps its logging as it was (a
    # basicConfig here stayed bound to whatever sys.stderr was at the time, later closed).
    handler: logging.Handler | None = None
    log = logging.getLogger("gradtrace")
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    # each refused batch is summarised below, with what to do, instead of one log line each
    export_log = logging.getLogger("gradtrace.export")
    level = export_log.level
    export_log.setLevel(logging.CRITICAL)
    try:
        return _spool(args)
    finally:
        export_log.setLevel(level)
        if handler is not None:
            log.removeHandler(handler)


def _spool(args: argparse.Namespace) -> int:
    from gradtrace import _config
    from gradtrace._export import Spool, resend_spool
    from gradtrace._sinks import SinkError, make_sink
    from gradtrace.cli import UsageError

    try:
        cfg = _config.load(spool_dir=args.dir, token=args.token)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    root = cfg.spool_dir
    destinations = _destinations(root, args.url)
    if not destinations:
        _say(f"nothing spooled in {root}")
        return 0
    failed = False
    for dest in destinations:
        sink = make_sink(dest, token=cfg.token, timeout=cfg.http_timeout)
        spool = Spool(root, sink.destination, cfg.spool_max_bytes, cfg.spool_max_age)
        if args.action == "requeue":
            _say(f"{sink.destination}: {spool.requeue_rejected()} refused batches back in the spool")
            continue
        pending = spool.pending()
        n_steps = sum(e.n_steps for e in pending)
        runs = sorted({e.run_id for e in pending})
        rejected = len(spool.rejected())
        _say(
            f"{sink.destination}: {len(pending)} batches, {n_steps} steps"
            f"{' of runs ' + ', '.join(runs) if runs else ''}; {rejected} rejected  [{spool.dir}]"
        )
        if args.action != "flush" or not pending:
            continue
        if "***" in dest and not args.url:
            _say("  the spool records this URL without its password: pass --url to resend")
            failed = True
            continue
        rejected_before = set(spool.rejected())
        try:
            sent, remaining = resend_spool(sink, spool, timeout=args.timeout)
        except SinkError as exc:
            _say(f"  not reachable: {exc}")
            failed = True
            continue
        finally:
            sink.close()
            refused = [p for p in spool.rejected() if p not in rejected_before]
        _say(f"  resent {sent} batches; {len(refused)} refused; {remaining} still waiting")
        if refused:
            _say_refused(sink.destination, refused)
        failed = failed or remaining > 0 or bool(refused)
    return 1 if failed else 0


def _say_refused(destination: str, refused: list[Path]) -> None:
    """How many batches the destination refused, why, and what to do about it."""
    reasons: dict[str, int] = {}
    for path in refused:
        try:
            why = path.with_name(path.name + ".reason").read_text(encoding="utf-8").strip()
        except OSError:
            why = "reason not recorded"
        why = why.removeprefix(destination).removeprefix(" ").removeprefix("answered ")
        reasons[why] = reasons.get(why, 0) + 1
    for why, n in reasons.items():
        hint = ""
        if "HTTP 401" in why or "HTTP 403" in why:
            hint = (
                "; set GRADTRACE_TOKEN (or pass --token) to a write token of the run's project "
                "(gradtrace token create --project P --scope write)"
            )
        _say(f"  {n} batch{'es' if n != 1 else ''} refused by {destination}: {why}{hint}")
    _say(
        f"  refused batches are kept in rejected/; after fixing the cause: "
        f"gradtrace spool requeue --url {destination} && gradtrace spool flush --url {destination}"
    )
