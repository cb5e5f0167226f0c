"""The background exporter: a bounded queue, batches, retries, a disk spool, lost counts.

The training thread hands step records to :class:`Exporter` and returns at once;
one daemon thread groups them into :class:`~gradtrace.schema.Batch` es (each
with a fresh ``batch_id`` and the run's metadata at an increasing ``revision``)
and writes them to a :mod:`sink <gradtrace._sinks>`.

- A full queue drops the new records and counts them (``lost["queue_full"]``);
  ``put_*`` never blocks and never raises.
- A failing write is retried with backoff ``2**n * uniform(0.8, 1.2)`` (capped)
  or after the ``Retry-After`` the destination asked for, until a deadline;
  then the batch is spooled to disk and the destination is considered down:
  further batches go straight to the spool and the oldest spooled batch probes
  the destination now and then. Once it answers, the spool is resent.
- A batch the destination refuses for good (e.g. HTTP 422) is counted as lost
  and kept under the spool's ``rejected/`` folder; an HTTP 413 is split first.
- Every loss is counted by reason in :attr:`Exporter.lost`, which is copied into
  ``RunInfo.lost`` of every batch, so a gap in a trace is always explained.
- Spooled batches are resent by the next exporter for the same destination
  (any run, any process); ``batch_id`` makes resends idempotent.

Example::

    >>> from gradtrace import _config, schema
    >>> from gradtrace._export import Exporter
    >>> from gradtrace._sinks import make_sink
    >>> cfg = _config.load(url="sqlite:///runs.db")
    >>> exp = Exporter(make_sink(cfg.url), cfg, schema.RunInfo(run_id="r1", name="demo"))
    >>> exp.put_steps([schema.StepRecord(step=0, loss=0.5)])
    >>> exp.update_run(schema.RunInfo(run_id="r1", name="demo", status="finished"))
    >>> exp.shutdown(timeout=10)  # final flush; the last batch carries status "finished"
    True
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gradtrace import schema
from gradtrace._config import Config
from gradtrace._sinks import Sink, SinkError, destination_key

logger = logging.getLogger("gradtrace.export")

RunInfoSource = Callable[[], schema.RunInfo] | schema.RunInfo

BACKOFF_CAP = 32.0  # seconds, one retry
PROBE_CAP = 60.0  # seconds between probes of a destination that is down
TENSOR_QUEUE_BYTES = 256 * 2**20
TENSOR_BATCH_BYTES = 8 * 2**20
LEASE_SECONDS = 120.0
FINAL_RESEND_SECONDS = 5.0  # spool resending a shutdown may add, at most
STALE_TMP_SECONDS = 3600.0


def backoff(attempt: int, cap: float = BACKOFF_CAP) -> float:
    """Seconds before retry number ``attempt`` (0-based): ``2**n * uniform(0.8, 1.2)``, capped."""
    return min(cap, (2.0 ** min(attempt, 16)) * random.uniform(0.8, 1.2))


def new_batch_id() -> str:
    """A fresh batch id (uuid4 hex): resending the same batch is idempotent."""
    return uuid.uuid4().hex


# --------------------------------------------------------------------------- spool


@dataclass(frozen=True)
class SpoolEntry:
    """One spooled batch file (possibly leased)."""

    path: Path
    run_id: str
    n_steps: int
    n_tensors: int


_SEP = "~"  # not allowed in batch or run ids (schema pattern), so names split safely


def _entry(path: Path) -> SpoolEntry | None:
    name = path.name
    base = name.split(".json", 1)[0]
    parts = base.split(_SEP)
    if len(parts) != 5:
        return None
    try:
        return SpoolEntry(path, parts[2], int(parts[3]), int(parts[4]))
    except ValueError:
        return None


class Spool:
    """Batches waiting on disk for one destination (Azure Monitor ``LocalFileStorage`` style).

    Layout: ``<root>/<destination key>/`` holds ``<ns>~<batch>~<run>~<steps>~<tensors>.json``
    files (written as ``*.tmp`` and renamed, so a reader never sees half a file),
    leased by renaming to ``*.json@<expiry>.lease`` (a crashed holder's lease
    expires), and ``rejected/`` with batches the destination refused, each beside a
    ``.reason`` text file. Directories are created with mode 0700. Files beyond the
    size cap (oldest first) or age cap are deleted and reported through
    ``on_discard(entry, reason)`` so the loss is counted, never silent.
    """

    def __init__(
        self,
        root: Path,
        destination: str,
        max_bytes: int,
        max_age: float,
        on_discard: Callable[[SpoolEntry, str], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.destination = destination
        self.dir = self.root / destination_key(destination)
        self.rejected_dir = self.dir / "rejected"
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.on_discard = on_discard
        self._put_lock = threading.Lock()

    def _ensure(self, path: Path) -> None:
        for directory in (self.root, self.dir, path):
            if not directory.is_dir():
                os.makedirs(directory, mode=0o700, exist_ok=True)
        marker = self.dir / "destination.txt"
        if not marker.exists():
            tmp = marker.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(self.destination + "\n", encoding="utf-8")
            os.replace(tmp, marker)

    def _write(self, directory: Path, name: str, data: bytes) -> Path:
        self._ensure(directory)
        final = directory / name
        tmp = directory / f"{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return final

    @staticmethod
    def file_name(batch: schema.Batch) -> str:
        """The spool file name of ``batch`` (sorts oldest first)."""
        return _SEP.join(
            (
                f"{time.time_ns():020d}",
                batch.batch_id,
                batch.run.run_id,
                str(len(batch.steps)),
                str(len(batch.tensors)),
            )
        ) + ".json"

    def find(self, batch_id: str) -> Path | None:
        """The spool file (waiting or leased) of batch ``batch_id``, if there is one."""
        marker = f"{_SEP}{batch_id}{_SEP}"
        for path in self._files():
            if marker in path.name and not path.name.endswith(".tmp"):
                return path
        return None

    def put(self, batch: schema.Batch) -> Path:
        """Write ``batch`` durably, once per batch id; then enforce the caps.

        A batch already in the spool (the exporter's worker and a shutdown that gave up
        on it both spool the same in-flight batch) is not written again: its existing
        file is returned. Raises ``OSError`` on failure.
        """
        with self._put_lock:
            existing = self.find(batch.batch_id)
            if existing is not None:
                return existing
            path = self._write(self.dir, self.file_name(batch), schema.dumps(batch).encode("utf-8"))
        self.enforce_caps(keep=path)
        return path

    def reject(self, batch: schema.Batch, reason: str) -> Path | None:
        """Keep a copy of a refused batch under ``rejected/`` (best effort, logged)."""
        try:
            name = self.file_name(batch)
            path = self._write(self.rejected_dir, name, schema.dumps(batch).encode("utf-8"))
            self._write(self.rejected_dir, name + ".reason", reason.encode("utf-8", "replace"))
        except OSError:
            logger.exception("could not keep a copy of a rejected batch in %s", self.rejected_dir)
            return None
        self._cap_rejected()
        return path

    def _files(self) -> list[Path]:
        try:
            return sorted(p for p in self.dir.iterdir() if p.is_file())
        except FileNotFoundError:
            return []

    def _discard(self, path: Path, reason: str) -> None:
        entry = _entry(path)
        try:
            path.unlink()
        except FileNotFoundError:
            return  # someone else took it
        except OSError:
            logger.exception("could not delete spool file %s", path)
            return
        if entry is not None and self.on_discard is not None:
            self.on_discard(entry, reason)
        elif entry is None:
            logger.warning("deleted unreadable spool file %s (%s)", path, reason)

    def enforce_caps(self, keep: Path | None = None) -> None:
        """Delete (and report) files older than ``max_age``, then the oldest beyond ``max_bytes``."""
        now = time.time()
        sized: list[tuple[Path, int]] = []
        for path in self._files():
            if path.suffix == ".tmp":
                try:
                    if now - path.stat().st_mtime > STALE_TMP_SECONDS:
                        path.unlink()
                        logger.warning("removed an unfinished spool write %s", path)
                except OSError:
                    pass
                continue
            if ".json" not in path.name:
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if self.max_age and now - st.st_mtime > self.max_age and path != keep:
                self._discard(path, "spool_expired")
                continue
            sized.append((path, st.st_size))
        total = sum(size for _, size in sized)
        for path, size in sized:  # oldest first
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            self._discard(path, "spool_full")
            total -= size

    def _cap_rejected(self) -> None:
        try:
            files = sorted(p for p in self.rejected_dir.iterdir() if p.name.endswith(".json"))
        except FileNotFoundError:
            return
        total = 0
        sizes = []
        for path in files:
            try:
                sizes.append((path, path.stat().st_size))
            except FileNotFoundError:
                continue
        total = sum(s for _, s in sizes)
        for path, size in sizes:
            if total <= self.max_bytes:
                break
            logger.warning("rejected batch %s deleted: the rejected/ folder is over its cap", path)
            for p in (path, path.with_name(path.name + ".reason")):
                try:
                    p.unlink()
                except OSError:
                    pass
            total -= size

    def pending(self) -> list[SpoolEntry]:
        """Spooled batches ready to send, oldest first (expired leases included), one per batch id.

        A second file of a batch id (written by another process at the same moment)
        is deleted: a resend is idempotent, a double count in ``spool list`` is not.
        """
        self.enforce_caps()
        now = time.time()
        out = []
        seen: set[str] = set()
        for path in self._files():
            name = path.name
            if name.endswith(".json"):
                pass
            elif name.endswith(".lease"):
                try:
                    expiry = float(name.rsplit("@", 1)[1][: -len(".lease")])
                except (IndexError, ValueError):
                    expiry = 0.0
                if expiry > now:
                    continue
            else:
                continue
            entry = _entry(path)
            if entry is None:
                continue
            batch_id = name.split(_SEP, 2)[1]
            if batch_id in seen:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                continue
            seen.add(batch_id)
            out.append(entry)
        return out

    def lease(self, entry: SpoolEntry, seconds: float = LEASE_SECONDS) -> SpoolEntry | None:
        """Take ``entry`` for sending by renaming it; None if someone else took it."""
        base = entry.path.name.split(".json", 1)[0] + ".json"
        target = entry.path.with_name(f"{base}@{time.time() + seconds:.3f}.lease")
        try:
            os.rename(entry.path, target)
        except FileNotFoundError:
            return None
        return SpoolEntry(target, entry.run_id, entry.n_steps, entry.n_tensors)

    def load(self, entry: SpoolEntry) -> schema.Batch:
        """Read a leased batch (``ValueError`` if the file is corrupt)."""
        return schema.Batch.model_validate_json(entry.path.read_bytes())

    def done(self, entry: SpoolEntry) -> None:
        """Forget a batch that was delivered."""
        try:
            entry.path.unlink()
        except FileNotFoundError:
            pass

    def release(self, entry: SpoolEntry) -> None:
        """Give a leased batch back (delivery failed, try again later)."""
        base = entry.path.name.split(".json", 1)[0] + ".json"
        try:
            os.rename(entry.path, entry.path.with_name(base))
        except FileNotFoundError:
            pass

    def move_to_rejected(self, entry: SpoolEntry, reason: str) -> None:
        """Move a leased batch the destination refused to ``rejected/``."""
        base = entry.path.name.split(".json", 1)[0] + ".json"
        try:
            self._ensure(self.rejected_dir)
            os.rename(entry.path, self.rejected_dir / base)
            (self.rejected_dir / (base + ".reason")).write_text(reason, encoding="utf-8")
        except OSError:
            logger.exception("could not move %s to %s", entry.path, self.rejected_dir)
        self._cap_rejected()

    def rejected(self) -> list[Path]:
        """Batch files the destination refused."""
        try:
            return sorted(p for p in self.rejected_dir.iterdir() if p.name.endswith(".json"))
        except FileNotFoundError:
            return []

    def requeue_rejected(self) -> int:
        """Move refused batches back into the spool (after fixing e.g. a token); returns how many."""
        moved = 0
        for path in self.rejected():
            try:
                os.rename(path, self.dir / path.name)
            except FileNotFoundError:
                continue
            try:
                path.with_name(path.name + ".reason").unlink()
            except FileNotFoundError:
                pass
            moved += 1
        return moved


def resend_spool(
    sink: Sink, spool: Spool, *, timeout: float = 60.0, on_lost: Callable[[str, int], None] | None = None
) -> tuple[int, int]:
    """Send every spooled batch of ``spool`` through ``sink`` now (``gradtrace spool flush``).

    Returns ``(sent, remaining)``. A retryable failure raises :class:`SinkError`
    (that batch stays spooled); a refused batch moves to ``rejected/``.
    """
    sent = 0
    deadline = time.monotonic() + timeout
    for entry in spool.pending():
        if time.monotonic() > deadline:
            break
        outcome = _send_spooled(sink, spool, entry, deadline - time.monotonic(), on_lost)
        if outcome is None:
            continue
        if not outcome:
            break
        sent += 1
    return sent, len(spool.pending())


def _send_spooled(
    sink: Sink,
    spool: Spool,
    entry: SpoolEntry,
    timeout: float,
    on_lost: Callable[[str, int], None] | None,
) -> bool | None:
    """True: delivered; False: retryable failure (released); None: gone (taken/rejected/corrupt)."""
    leased = spool.lease(entry)
    if leased is None:
        return None
    try:
        batch = spool.load(leased)
    except (OSError, ValueError) as exc:
        logger.error("spooled batch %s is unreadable (%s); moved to rejected/", leased.path, exc)
        spool.move_to_rejected(leased, f"unreadable: {exc}")
        if on_lost is not None:
            on_lost("spool_corrupt", leased.n_steps)
        return None
    try:
        sink.write(batch, timeout=max(0.01, timeout))
    except SinkError as exc:
        if exc.retryable:
            spool.release(leased)
            raise
        logger.error("%s refused spooled batch %s: %s", sink.destination, batch.batch_id, exc)
        spool.move_to_rejected(leased, str(exc))
        if on_lost is not None:
            on_lost(f"rejected_{exc.reason}", leased.n_steps)
        return None
    except BaseException:
        spool.release(leased)
        raise
    spool.done(leased)
    return True


# --------------------------------------------------------------------------- exporter


class Exporter:
    """Ships a run's records from a background thread; see the module docstring.

    ``run_info`` is the run's metadata, or a callable returning its current
    value (read each time a batch is built). :meth:`update_run` replaces it.
    """

    def __init__(
        self,
        sink: Sink,
        config: Config,
        run_info: RunInfoSource,
        *,
        spool: Spool | None = None,
    ) -> None:
        self._sink = sink
        self._config = config
        self._run_source: Callable[[], schema.RunInfo] | None = None
        self._run: schema.RunInfo | None = None
        if callable(run_info):
            self._run_source = run_info
        else:
            self._run = run_info
        self._spool = spool or Spool(
            config.spool_dir,
            sink.destination,
            config.spool_max_bytes,
            config.spool_max_age,
        )
        self._spool.on_discard = self._on_discard
        self._init_state()
        self._inert = bool(config.disabled)
        self._shutdown_result: bool | None = None
        self._internal_error: BaseException | None = None
        self._warned: set[str] = set()
        if not self._inert:
            self._start()
            atexit.register(self._atexit)
            ref = weakref.WeakMethod(self._after_fork_in_child)
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=lambda: (m := ref()) and m())

    # -- state -------------------------------------------------------------

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._steps: deque[schema.StepRecord] = deque()
        self._tensors: deque[schema.TensorRecord] = deque()
        self._tensor_bytes = 0
        self._lost: Counter[str] = Counter()
        self._revision = 0
        self._run_dirty = True
        self._put_seq = 1  # the run's metadata is the first thing to deliver
        self._done_seq = 0
        self._failures = 0
        self._wake = threading.Event()
        self._interrupt = threading.Event()  # cuts a retry sleep short (shutdown, queue pressure)
        self._closing = False
        self._abandoned = False
        self._inflight: schema.Batch | None = None
        self._down = False
        self._next_probe = 0.0
        self._probe_attempt = 0
        self._spool_pending = True  # a previous run may have left batches for this destination
        self._drain_deadline = float("inf")
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run_worker, name="gradtrace-exporter", daemon=True)
        self._thread.start()

    def _after_fork_in_child(self) -> None:
        # The child is a different process: shipping under the parent's run id would
        # race the parent's revisions and could mark its run finished. Go quiet.
        self._init_state()
        self._inert = True
        self._shutdown_result = True
        try:
            atexit.unregister(self._atexit)
        except Exception:
            pass

    def _atexit(self) -> None:
        self.shutdown(self._config.shutdown_timeout)

    # -- the caller's side (never blocks, never raises) --------------------

    @property
    def lost(self) -> dict[str, int]:
        """Records lost so far, by reason (copied into ``RunInfo.lost`` of each batch)."""
        with self._lock:
            return dict(self._lost)

    @property
    def destination(self) -> str:
        """Where the batches go (URL without secrets)."""
        return self._sink.destination

    @property
    def spool(self) -> Spool:
        """The on-disk spool of this exporter's destination."""
        return self._spool

    def put_steps(self, steps: Iterable[schema.StepRecord]) -> None:
        """Queue step records; those that do not fit are dropped and counted ``queue_full``."""
        try:
            self._put_steps(steps)
        except Exception as exc:
            self._internal("put_steps", exc)

    def _put_steps(self, steps: Iterable[schema.StepRecord]) -> None:
        steps = list(steps)
        for s in steps:
            if not isinstance(s, schema.StepRecord):
                raise TypeError(f"put_steps expects StepRecord, got {type(s).__name__}")
        if not steps:
            return
        wake = False
        with self._lock:
            if self._inert or self._closing:
                self._lost["after_shutdown" if self._closing else "disabled"] += len(steps)
                return
            room = self._config.queue_steps - len(self._steps)
            taken = steps[: max(room, 0)]
            dropped = len(steps) - len(taken)
            self._steps.extend(taken)
            if dropped:
                self._lost["queue_full"] += dropped
            self._put_seq += 1
            if len(self._steps) >= self._config.batch_steps:
                wake = True
            if len(self._steps) * 2 > self._config.queue_steps:
                self._interrupt.set()
        if dropped:
            self._warn_once("queue_full", "gradtrace queue is full: dropping steps (counted in lost)")
        if wake:
            self._wake.set()

    def put_tensors(self, tensors: Iterable[schema.TensorRecord]) -> None:
        """Queue full tensors; beyond the queue's byte budget they are dropped and counted."""
        try:
            tensors = list(tensors)
            for t in tensors:
                if not isinstance(t, schema.TensorRecord):
                    raise TypeError(f"put_tensors expects TensorRecord, got {type(t).__name__}")
            dropped = 0
            with self._lock:
                if self._inert or self._closing:
                    self._lost["tensors_after_shutdown"] += len(tensors)
                    return
                for t in tensors:
                    size = len(t.data)
                    if self._tensor_bytes + size > TENSOR_QUEUE_BYTES:
                        dropped += 1
                        continue
                    self._tensors.append(t)
                    self._tensor_bytes += size
                if dropped:
                    self._lost["tensors_queue_full"] += dropped
                self._put_seq += 1
            if dropped:
                self._warn_once("tensors_queue_full", "gradtrace tensor queue is full: dropping tensors")
        except Exception as exc:
            self._internal("put_tensors", exc)

    def update_run(self, run: schema.RunInfo) -> None:
        """Replace the run's metadata; the next batch (sent even without steps) carries it."""
        try:
            if not isinstance(run, schema.RunInfo):
                raise TypeError(f"update_run expects RunInfo, got {type(run).__name__}")
            with self._lock:
                self._run = run
                self._run_source = None
                self._run_dirty = True
                self._put_seq += 1
        except Exception as exc:
            self._internal("update_run", exc)

    def flush(self, timeout: float | None = None) -> bool:
        """Export everything queued so far; True if all of it reached the destination.

        False when the time ran out or some of it was spooled or lost instead.
        """
        if timeout is None:
            timeout = self._config.shutdown_timeout
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._lock:
            if self._inert or self._shutdown_result is not None:
                return bool(self._shutdown_result) if self._shutdown_result is not None else True
            target = self._put_seq
            failures = self._failures
            lost = sum(self._lost.values())
        self._wake.set()
        with self._cond:
            while self._done_seq < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    break
                self._cond.wait(remaining)
            ok = (
                self._done_seq >= target
                and self._failures == failures
                and sum(self._lost.values()) == lost
            )
        self._raise_if_strict()
        return ok

    def shutdown(self, timeout: float | None = None) -> bool:
        """Final flush, then stop the worker. Idempotent.

        Returns True if the final flush delivered everything and no record of the
        run was lost (``lost`` is empty).

        The worker gets the budget minus a small reserve; if the destination hangs
        past it, whatever is still queued or in flight is spooled to disk by the
        caller's thread, so nothing is lost and this returns within ``timeout``.
        """
        if timeout is None:
            timeout = self._config.shutdown_timeout
        start = time.monotonic()
        with self._lock:
            if self._shutdown_result is not None:
                return self._shutdown_result
            if self._inert:
                self._shutdown_result = True
                return True
            failures = self._failures
            self._closing = True
            self._run_dirty = True  # the final status must reach the store
            reserve = min(1.0, 0.2 * timeout)
            self._drain_deadline = start + max(timeout - reserve, 0.0)
        self._interrupt.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(max(self._drain_deadline - time.monotonic(), 0.0))
        ok = thread is None or not thread.is_alive()
        if not ok:
            self._abandon()
        else:
            try:
                self._sink.close()
            except Exception:
                logger.debug("closing the sink failed", exc_info=True)
        with self._lock:
            ok = ok and self._failures == failures and not self._steps and not any(self._lost.values())
            self._shutdown_result = ok
        try:
            atexit.unregister(self._atexit)
        except Exception:
            pass
        self._raise_if_strict()
        return ok

    def _abandon(self) -> None:
        """The worker is stuck in the sink: spool what is left from this thread."""
        with self._lock:
            self._abandoned = True
            inflight = self._inflight
            steps, tensors = list(self._steps), list(self._tensors)
            self._steps.clear()
            self._tensors.clear()
        logger.warning(
            "%s did not answer within the shutdown budget; spooling %d queued steps",
            self._sink.destination,
            len(steps) + (len(inflight.steps) if inflight else 0),
        )
        batches: list[schema.Batch] = []
        if inflight is not None:  # it may still arrive; the batch id makes a resend harmless
            batches.append(inflight)
        for chunk_steps, chunk_tensors in self._chunks(steps, tensors):
            batches.append(self._make_batch(chunk_steps, chunk_tensors))
        if not steps and not tensors:
            batches.append(self._make_batch([], []))
        for batch in batches:
            self._spool_batch(batch)

    # -- the worker ----------------------------------------------------------

    def _run_worker(self) -> None:
        while True:
            try:
                closing = self._closing
                self._export_queue()
                if closing and not self._abandoned and not self._down:
                    # A short run still helps empty the spool, within a small share of its budget.
                    self._resend_some(min(time.monotonic() + FINAL_RESEND_SECONDS, self._drain_deadline))
                if closing or self._abandoned:
                    return
                self._resend_some()
            except Exception as exc:  # a bug of ours; the worker must survive it
                self._internal("exporter worker", exc)
                with self._cond:
                    self._failures += 1
                    self._done_seq = self._put_seq
                    self._cond.notify_all()
                if self._closing:
                    return
            wait = self._config.flush_interval
            if self._spool_pending and not self._down:
                wait = min(wait, 0.05)
            elif self._down:
                wait = min(wait, max(self._next_probe - time.monotonic(), 0.01))
            self._wake.wait(wait)
            self._wake.clear()

    def _chunks(
        self, steps: list[schema.StepRecord], tensors: list[schema.TensorRecord]
    ) -> Iterator[tuple[list[schema.StepRecord], list[schema.TensorRecord]]]:
        n = self._config.batch_steps
        while steps or tensors:
            chunk_s, steps = steps[:n], steps[n:]
            chunk_t: list[schema.TensorRecord] = []
            size = 0
            while tensors and (not chunk_t or size + len(tensors[0].data) <= TENSOR_BATCH_BYTES):
                size += len(tensors[0].data)
                chunk_t.append(tensors.pop(0))
            yield chunk_s, chunk_t

    def _take(self) -> tuple[list[schema.StepRecord], list[schema.TensorRecord], bool, int] | None:
        """Under the lock: the next batch's records, whether the queue is then empty, the seq."""
        if self._abandoned:
            return None
        if not self._steps and not self._tensors and not self._run_dirty:
            self._done_seq = max(self._done_seq, self._put_seq)
            self._cond.notify_all()
            return None
        n = min(self._config.batch_steps, len(self._steps))
        steps = [self._steps.popleft() for _ in range(n)]
        tensors: list[schema.TensorRecord] = []
        size = 0
        while self._tensors and (not tensors or size + len(self._tensors[0].data) <= TENSOR_BATCH_BYTES):
            t = self._tensors.popleft()
            size += len(t.data)
            self._tensor_bytes -= len(t.data)
            tensors.append(t)
        self._run_dirty = False
        empty = not self._steps and not self._tensors
        return steps, tensors, empty, self._put_seq

    def _export_queue(self) -> None:
        while True:
            with self._lock:
                taken = self._take()
            if taken is None:
                return
            steps, tensors, empty, seq = taken
            batch = self._make_batch(steps, tensors)
            with self._lock:
                if self._abandoned:
                    return
                self._inflight = batch
            ok = self._deliver(batch)
            with self._cond:
                self._inflight = None
                if not ok:
                    self._failures += 1
                if empty:
                    self._done_seq = max(self._done_seq, seq)
                    self._cond.notify_all()

    def _current_run(self) -> schema.RunInfo:
        source = self._run_source
        if source is not None:
            return source()
        assert self._run is not None
        return self._run

    def _make_batch(
        self, steps: list[schema.StepRecord], tensors: list[schema.TensorRecord]
    ) -> schema.Batch:
        run = self._current_run()
        with self._lock:
            self._revision = max(self._revision + 1, run.revision)
            lost = Counter(run.lost)
            lost.update(self._lost)
            revision = self._revision
        run = run.model_copy(update={"revision": revision, "lost": dict(lost)})
        return schema.Batch(batch_id=new_batch_id(), run=run, steps=steps, tensors=tensors)

    def _deliver(self, batch: schema.Batch) -> bool:
        """Write ``batch`` (retrying) or spool it; True if it reached the destination."""
        if self._down and not self._closing:
            self._spool_batch(batch)
            return False
        deadline = time.monotonic() + self._config.retry_seconds
        if self._closing:
            deadline = min(deadline, self._drain_deadline)
        attempt = 0
        while True:
            remaining = min(deadline, self._drain_deadline) - time.monotonic()
            try:
                self._sink.write(batch, timeout=max(min(remaining, self._config.http_timeout), 0.01))
                self._mark_up()
                return True
            except SinkError as exc:
                error = exc
            except Exception as exc:
                logger.exception("unexpected error writing to %s", self._sink.destination)
                error = SinkError(f"{type(exc).__name__}: {exc}", retryable=True, reason="unexpected")
            if not error.retryable:
                return self._refused(batch, error)
            delay = error.retry_after if error.retry_after is not None else backoff(attempt)
            attempt += 1
            if time.monotonic() + delay > deadline or not self._sleep(delay):
                self._warn_once(
                    f"down:{error.reason}",
                    "%s: %s; spooling batches to %s and resending later",
                    self._sink.destination,
                    error,
                    self._spool.dir,
                )
                self._mark_down(error)
                self._spool_batch(batch)
                return False

    def _sleep(self, delay: float) -> bool:
        """Wait ``delay`` before a retry; False if the batch should be spooled instead.

        Shutdown and queue pressure cut the wait short: the retry is then kept
        only if it still fits in the shutdown budget and the queue has room.
        """
        end = time.monotonic() + delay
        logger.info("retrying in %.1fs", delay)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return True
            self._interrupt.clear()  # then check: a shutdown after this line still wakes us
            if len(self._steps) * 2 > self._config.queue_steps:
                return False
            if self._closing:
                if time.monotonic() + left > self._drain_deadline:
                    return False
                time.sleep(left)
                return True
            self._interrupt.wait(left)

    def _refused(self, batch: schema.Batch, error: SinkError) -> bool:
        if error.status == 413 and len(batch.steps) + len(batch.tensors) > 1:
            half_s, half_t = len(batch.steps) // 2, len(batch.tensors) // 2
            parts = [
                (batch.steps[:half_s], batch.tensors[:half_t]),
                (batch.steps[half_s:], batch.tensors[half_t:]),
            ]
            logger.info("%s: batch too large, splitting it in two", self._sink.destination)
            ok = True
            for steps, tensors in parts:
                if steps or tensors:
                    part = batch.model_copy(
                        update={"batch_id": new_batch_id(), "steps": steps, "tensors": tensors}
                    )
                    ok = self._deliver(part) and ok
            return ok
        logger.error(
            "%s refused batch %s for good (%s); %d steps counted as lost, a copy kept in %s",
            self._sink.destination,
            batch.batch_id,
            error,
            len(batch.steps),
            self._spool.rejected_dir,
        )
        self._spool.reject(batch, str(error))
        self._count_lost(f"rejected_{error.reason}", len(batch.steps), len(batch.tensors))
        return False

    def _count_lost(self, reason: str, n_steps: int, n_tensors: int = 0) -> None:
        with self._lock:
            if n_steps:
                self._lost[reason] += n_steps
            if n_tensors:
                self._lost[f"tensors_{reason}"] += n_tensors

    def _spool_batch(self, batch: schema.Batch) -> None:
        try:
            self._spool.put(batch)
            self._spool_pending = True
        except Exception:
            logger.exception("could not spool a batch to %s: %d steps lost", self._spool.dir, len(batch.steps))
            self._count_lost("spool_error", len(batch.steps), len(batch.tensors))

    def _on_discard(self, entry: SpoolEntry, reason: str) -> None:
        run = self._run.run_id if self._run is not None else None
        if run is None and self._run_source is not None:
            try:
                run = self._run_source().run_id
            except Exception:
                run = None
        if entry.run_id == run:
            self._count_lost(reason, entry.n_steps, entry.n_tensors)
        logger.warning(
            "discarded spooled batch of run %s (%d steps): %s", entry.run_id, entry.n_steps, reason
        )

    def _mark_up(self) -> None:
        if self._down:
            logger.info("%s is reachable again", self._sink.destination)
        self._down = False
        self._probe_attempt = 0

    def _mark_down(self, error: SinkError) -> None:
        self._down = True
        delay = error.retry_after if error.retry_after is not None else backoff(self._probe_attempt, PROBE_CAP)
        self._probe_attempt += 1
        self._next_probe = time.monotonic() + delay

    def _resend_some(self, until: float | None = None) -> None:
        """Resend spooled batches (probing a destination that is down), a slice at a time.

        ``until`` is the final pass at shutdown: it ignores new work and stops at that time.
        """
        if not self._spool_pending:
            return
        if self._down and time.monotonic() < self._next_probe:
            return
        final = until is not None
        budget = until if until is not None else time.monotonic() + max(self._config.flush_interval / 2, 0.5)
        entries = self._spool.pending()
        if not entries:
            self._spool_pending = False
            return
        for entry in entries:
            if time.monotonic() > budget or (not final and (self._closing or self._wake.is_set())):
                return
            try:
                outcome = _send_spooled(
                    self._sink,
                    self._spool,
                    entry,
                    min(self._config.http_timeout, max(budget - time.monotonic(), 0.01)) if final
                    else self._config.http_timeout,
                    lambda reason, n, e=entry: self._on_discard(e, reason),
                )
            except SinkError as exc:
                self._mark_down(exc)
                return
            if outcome:
                self._mark_up()
        self._spool_pending = bool(self._spool.pending())

    # -- internal errors -------------------------------------------------------

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(msg, *args)

    def _internal(self, where: str, exc: BaseException) -> None:
        logger.exception("gradtrace exporter error in %s", where)
        if self._internal_error is None:
            self._internal_error = exc
        if self._config.strict and threading.current_thread() is not self._thread:
            self._internal_error = None
            raise exc

    def _raise_if_strict(self) -> None:
        if self._config.strict and self._internal_error is not None:
            exc, self._internal_error = self._internal_error, None
            raise RuntimeError("gradtrace exporter failed internally") from exc


__all__ = ["Exporter", "Spool", "SpoolEntry", "backoff", "new_batch_id", "resend_spool"]
