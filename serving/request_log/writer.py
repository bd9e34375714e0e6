"""Batched, outage-tolerant writer of the prediction request log.

Why hand-written: SQLAlchemy gives us connections, ``insert()`` and executemany, but no background batching
writer that keeps the request path free of database latency and survives a database outage without
losing rows; Feast's feature logging writes to the *offline store* (files / warehouse tables), not to a
relational request log we query by request id. So this module adds the small piece in between.

How it works
------------
* ``log()`` appends the record to an in-memory deque under a short lock: O(1), never blocks on I/O in the
  normal case, never raises, callable from threads and from asyncio code.
* ONE daemon thread drains the deque in batches of up to ``batch_size`` rows every ``flush_interval_s``
  (sooner when a batch is full) with ``insert(table)`` + a list of dicts (executemany), one transaction
  per batch.
* Database errors (connection refused, server gone, locked SQLite file...) keep the batch pending and
  switch to retries with exponential backoff (``retry_initial_s`` doubling up to ``retry_max_s``); a
  failure disposes the engine's pool (there is none on SQLite) so each retry reconnects.
* Memory is bounded by ``max_buffer`` records. While the database is down the thread spills the oldest
  pending records to the spool directory once the buffer is full (down to half of it). If records come in
  faster than the thread reacts (or while the thread is stuck in a hanging database call), ``log()`` moves
  the oldest queued record into an append-only "overflow" spool file itself (a buffered write of one JSON
  line, no fsync), so the bound holds at every instant. That is the only case in which ``log()`` touches
  the disk.
* Spool files are JSON Lines, one record per line, written under a hidden temporary name, fsync'ed, then
  atomically renamed to ``<time_ns>-<pid>-<seq>.jsonl`` (the directory is fsync'ed too). When the
  database is reachable they are replayed oldest first, **one transaction per file**, and the file is
  deleted right after the commit.
* Several processes (uvicorn workers) may share one spool directory on one host: every spool file is
  ``flock``-ed by whoever writes or replays it, so a file is never replayed twice concurrently. Temporary
  files left by a crashed process (unlocked and older than a minute) are salvaged.
* Rows the database rejects for what they contain (not for being down) are isolated by a rolled-back
  trial insert of each row, and set aside in ``<spool>/rejected/*.jsonl`` (same format plus an
  ``_error`` key; move a file back into the spool directory to retry it). They never block the others.
* ``flush()`` makes everything logged so far durable: written to the database, or spilled to disk if the
  database is down. ``close()`` does the same and stops the thread; records logged after ``close()`` are
  spilled synchronously, and an ``atexit`` hook closes a writer the application forgot to close.

Each record carries a ``record_id`` (unique, made when it is created: ``_new_record_id``) under a unique
index, and every insert is ``INSERT ... ON CONFLICT (record_id) DO NOTHING`` (PostgreSQL, SQLite), so the two
ways a batch can be written twice store it once: (1) the process dies after a spool file's transaction committed but before the
file is deleted, so the next replay inserts it again; (2) the connection drops while COMMIT is in flight and
the commit did succeed on the server, so the batch is retried (the fast COPY path, which has no ON
CONFLICT, is used only for a batch's first attempt). Other databases get a plain insert: at-least-once
there. A process killed with SIGKILL loses what is still only in memory (at most ``max_buffer``
records, normally less than ``flush_interval_s`` worth).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import itertools
import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from alembic.util.exc import CommandError
from sqlalchemy import Engine, Insert, Table, create_engine, insert, make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import NullPool, StaticPool

from serving.request_log.migrations import migrate_engine
from serving.request_log.table import (
    COLUMNS,
    KEY_ID_LEN,
    MODEL_LEN,
    RECORD_ID_LEN,
    REQUEST_ID_LEN,
    make_table,
)

logger = logging.getLogger(__name__)

SPOOL_SUFFIX = ".jsonl"
TMP_SUFFIX = ".tmp"
REJECTED_DIR = "rejected"
# A temporary spool file nobody holds a lock on and this old was left by a crashed process.
ORPHAN_TMP_AGE_S = 60.0
# How often an idle writer looks for spool files spilled by other processes.
SPOOL_SCAN_INTERVAL_S = 5.0

_ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_NAIVE_UTC


# Record ids: a random per-process prefix (96 bits, new in every forked worker) and a counter. Not uuid4: its
# os.urandom call releases the GIL on every log(), and the busy writer thread then holds it for a switch
# interval (bench/request_log_writer.py: log() 10 -> 29 us per record with uuid4).
_id_prefix = ""
_id_counter = itertools.count()


def _new_id_prefix() -> None:
    global _id_prefix, _id_counter
    _id_prefix, _id_counter = os.urandom(12).hex(), itertools.count()


_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)


def _new_record_id() -> str:
    """A process-unique id of 36 characters (24 random hex + a 12-hex-digit counter)."""
    return f"{_id_prefix}{next(_id_counter):012x}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One prediction, as stored in ``prediction_log`` (minus the ``id``).

    The mappings are not copied by ``log()``: do not mutate them after logging the record.
    """

    request_id: str
    model: str
    model_version: str
    entity_key: Mapping[str, Any]
    inputs: Mapping[str, Any]
    features: Mapping[str, Any]
    prediction: float
    latency_ms: float
    created_at: datetime = field(default_factory=_utcnow)
    record_id: str = field(default_factory=_new_record_id)  # what makes a re-write a no-op
    registry_version: str | None = None  # the MLflow model version served (None: a model folder)
    run_id: str | None = None  # the MLflow run that trained it
    feature_service: str | None = None  # the FeatureService its features came through
    key_id: str | None = None  # the API key that made the request (serving/auth)


# --------------------------------------------------------------------------------------------------
# encoding


def _json_default(obj: Any) -> Any:
    """Fallback for values orjson does not know (Decimal, numpy scalars without numpy option, sets...)."""
    if hasattr(obj, "item") and callable(obj.item):  # numpy / pandas scalars
        with contextlib.suppress(Exception):
            return obj.item()
    if hasattr(obj, "isoformat") and callable(obj.isoformat):
        return obj.isoformat()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    try:
        value = float(obj)
    except (TypeError, ValueError):
        return str(obj)
    return value if math.isfinite(value) else None


def _dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj, default=_json_default, option=_ORJSON_OPTS)
    except (TypeError, orjson.JSONEncodeError):
        # e.g. integers beyond 64 bits: the standard library copes, with str() for the rest
        return json.dumps(obj, default=str).encode()


def _json_serializer(obj: Any) -> str:
    """JSON encoder of the engine's JSON columns (same encoding as the spool files)."""
    return _dumps(obj).decode()


def _as_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"created_at must be a datetime, not {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _text(value: Any, max_len: int) -> str | None:
    return None if value is None else str(value)[:max_len]


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _mapping(value: Any) -> Any:
    if value is None:
        return {}
    return dict(value) if isinstance(value, Mapping) else value


def _to_row(record: Any) -> dict[str, Any]:
    """The insert parameters of ``record``. Raises if the object is not usable as a record."""
    if not isinstance(record, PredictionRecord):
        raise TypeError(f"expected a PredictionRecord, got {type(record).__name__}")
    return {
        "request_id": _text(record.request_id, REQUEST_ID_LEN),
        "model": _text(record.model, MODEL_LEN),
        "model_version": _text(record.model_version, MODEL_LEN),
        "entity_key": _mapping(record.entity_key),
        "inputs": _mapping(record.inputs),
        "features": _mapping(record.features),
        "prediction": _number(record.prediction),
        "latency_ms": _number(record.latency_ms),
        "created_at": _as_utc(record.created_at),
        "record_id": _text(record.record_id, RECORD_ID_LEN),
        "registry_version": _text(record.registry_version, 20),
        "run_id": _text(record.run_id, 64),
        "feature_service": _text(record.feature_service, MODEL_LEN),
        "key_id": _text(record.key_id, KEY_ID_LEN),
    }


COPY_COLUMNS = (
    "request_id",
    "model",
    "model_version",
    "entity_key",
    "inputs",
    "features",
    "prediction",
    "latency_ms",
    "created_at",
    "record_id",
    "registry_version",
    "run_id",
    "feature_service",
    "key_id",
)
JSON_COLUMNS = frozenset({"entity_key", "inputs", "features"})
OPTIONAL_COLUMNS = frozenset(
    c.name for c in make_table(None).columns if c.nullable and c.name != "prediction"
)


def _encode_row(row: Mapping[str, Any]) -> bytes:
    return _dumps(row) + b"\n"


def _encode_record(record: Any) -> bytes:
    """One spool line for ``record``; never raises (unusable objects become a line replay rejects)."""
    try:
        return _encode_row(_to_row(record))
    except Exception as exc:
        return _dumps({"_error": f"unusable record: {exc!r}", "_raw": repr(record)}) + b"\n"


def _decode_row(line: bytes) -> dict[str, Any]:
    """Insert parameters from one spool line. Raises ``ValueError``/``KeyError`` on a bad line."""
    data = orjson.loads(line)
    if not isinstance(data, dict):
        raise ValueError("spool line is not a JSON object")
    # (spool files written before a later nullable column existed lack it: such rows get NULL there)
    row = {name: data.get(name) if name in OPTIONAL_COLUMNS else data[name] for name in COLUMNS}
    row["created_at"] = _as_utc(row["created_at"])
    return row


# --------------------------------------------------------------------------------------------------
# errors


class _DatabaseDown(Exception):
    """The database cannot take writes right now (retry later); ``__cause__`` is the original error."""


def _is_connectivity_error(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc, OperationalError | InterfaceError | DisconnectionError | PoolTimeoutError | OSError
    )


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return " ".join(text.split())[:500]


# --------------------------------------------------------------------------------------------------
# spool files


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _SpoolFile:
    """A spool file being written: hidden temporary name, flock held, renamed into place by ``commit()``."""

    _seq = itertools.count()

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._seq):06d}{SPOOL_SUFFIX}"
        self.directory = directory
        self.final = directory / name
        self.tmp = directory / f".{name}{TMP_SUFFIX}"
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        self.fh: BinaryIO = os.fdopen(fd, "wb", buffering=64 * 1024)
        self.lines = 0

    def write(self, line: bytes) -> None:
        self.fh.write(line)
        self.lines += 1

    def commit(self) -> Path:
        """fsync, rename to the final name, fsync the directory, release the lock."""
        try:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            os.rename(self.tmp, self.final)
            _fsync_dir(self.directory)
        finally:
            self.fh.close()
        return self.final

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.fh.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()


def _write_spool_file(directory: Path, lines: Iterable[bytes]) -> tuple[Path, int]:
    spool = _SpoolFile(directory)
    try:
        for line in lines:
            spool.write(line)
        return spool.commit(), spool.lines
    except BaseException:
        spool.abort()
        raise


@contextlib.contextmanager
def _locked_spool_file(path: Path) -> Iterator[BinaryIO | None]:
    """Open and flock ``path``; yields ``None`` if it is gone or someone else holds it."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, after the lock is no longer needed
    except FileNotFoundError:
        yield None
        return
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            # replayed and deleted by someone else between our listing and our lock?
            usable = os.path.samestat(os.fstat(fh.fileno()), os.stat(path))
        except (BlockingIOError, FileNotFoundError):
            usable = False
        yield fh if usable else None


# --------------------------------------------------------------------------------------------------
# the writer


class RequestLogWriter:
    """Writes :class:`PredictionRecord` rows to ``prediction_log`` off the request path; see the module doc.

    ``url`` is a SQLAlchemy URL (``sqlite:///path.db``, ``postgresql+psycopg://...``), ``schema`` the
    schema of the table (``None`` on SQLite), ``spool_dir`` where records go while the database is down.
    """

    def __init__(
        self,
        url: str,
        schema: str | None,
        spool_dir: Path,
        batch_size: int = 500,
        flush_interval_s: float = 0.25,
        max_buffer: int = 20_000,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        if batch_size < 1 or max_buffer < 1:
            raise ValueError("batch_size and max_buffer must be >= 1")
        if flush_interval_s <= 0 or retry_initial_s <= 0 or retry_max_s < retry_initial_s:
            raise ValueError("intervals must be > 0 and retry_max_s >= retry_initial_s")
        self._schema = schema
        self._table = make_table(schema)
        self._spool_dir = Path(spool_dir)
        self._rejected_dir = self._spool_dir / REJECTED_DIR
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._max_buffer = max_buffer
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        # Bad URL or missing driver: fail here, loudly. Connecting happens later.
        self._engine = _make_engine(url)
        self._insert = _idempotent_insert(self._table, self._engine.dialect.name)

        # --- shared state, guarded by _cond (its lock is held only for O(1)/O(batch) work, never I/O
        # except the overflow write in log()) ---
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[Any] = deque()
        self._inflight: list[Any] = []  # taken from the queue by the thread, not yet durable
        self._mem = 0  # len(_queue) + len(_inflight)
        self._overflow: _SpoolFile | None = None
        self._started = False
        self._closing = False  # close() called: log() spills synchronously from now on
        self._closed = False
        self._abandoned = False  # close() timed out and took over the thread's records
        self._stop = False
        self._flush_requested = 0
        self._flush_done = 0
        self._flush_ok = False
        self._flush_waiters: list[tuple[int, Future[bool]]] = []  # flush_future()s: (target, future)
        self._spill_retry_at = 0.0
        self._stats: dict[str, Any] = {
            "logged": 0,
            "written": 0,
            "peak_buffered": 0,
            "spilled_files": 0,
            "spilled_records": 0,
            "replayed_files": 0,
            "replayed_records": 0,
            "rejected_records": 0,
            "failures": 0,
            "last_error": None,
            "db_up": False,
        }

        # --- owned by whoever holds _work_lock (the thread, or a caller when there is no thread) ---
        self._work_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._migrated = False
        self._backoff_s = retry_initial_s
        self._next_attempt = 0.0
        self._spool_backlog = True  # look at the spool directory on the first cycle
        self._next_scan = 0.0
        self._cycle_clean = True  # no record was rejected during the current flush cycle

    # ----------------------------------------------------------------------------------------------
    # public interface

    def start(self) -> None:
        """Migrate (if the database is down, keep retrying in the background), then start the thread.

        Spool files left by earlier runs are replayed by the thread as soon as the database is reachable
        (``flush()`` waits for that).
        """
        with self._cond:
            if self._closing:
                raise RuntimeError("RequestLogWriter.start() after close()")
            if self._started:
                return
            self._started = True
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        with self._work_lock:
            try:
                self._ensure_migrated()
                self._db_ok()
            except _DatabaseDown as exc:
                self._db_failed(exc.__cause__ or exc)
        thread = threading.Thread(target=self._run, name="request-log-writer", daemon=True)
        self._thread = thread
        thread.start()
        atexit.register(self._close_at_exit)

    def log(self, record: PredictionRecord) -> None:
        """Queue ``record`` for writing. Non-blocking, O(1), thread-safe; never raises."""
        try:
            with self._cond:
                self._stats["logged"] += 1
                if not self._closing:
                    if self._mem < self._max_buffer:
                        self._queue.append(record)
                        self._mem += 1
                        if self._mem > self._stats["peak_buffered"]:
                            self._stats["peak_buffered"] = self._mem
                        if len(self._queue) >= self._batch_size or self._mem >= self._max_buffer:
                            self._cond.notify()
                    else:
                        self._overflow_locked(record)
                    return
            # closed: nobody will drain the queue any more
            self._spill_now([record])
        except Exception:
            logger.exception("request log: could not log record %r", getattr(record, "request_id", None))

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until everything logged so far is durable: in the database, or spilled to the spool
        directory if the database is down. Returns True if it all reached the database (spool replayed,
        nothing rejected), False otherwise or on timeout. From asyncio code: ``await asyncio.to_thread``.
        """
        with self._cond:
            if self._closed:
                return self._flush_ok
            thread = self._thread
            if thread is not None and thread.is_alive():
                self._flush_requested += 1
                target = self._flush_requested
                self._cond.notify_all()
                done = self._cond.wait_for(
                    lambda: self._flush_done >= target or not thread.is_alive(), timeout=timeout_s
                )
                return bool(done and self._flush_done >= target and self._flush_ok)
        # not started (or the thread died): do the work in the caller
        if not self._work_lock.acquire(timeout=timeout_s):
            return False
        try:
            return self._flush_cycle(final=False)
        except Exception:
            logger.exception("request log: flush failed")
            return False
        finally:
            self._work_lock.release()

    def flush_future(self) -> Future[bool]:
        """`flush()` without a blocked thread: a future the writer thread completes with flush()'s result
        once everything logged so far is durable. From asyncio code: ``await asyncio.wrap_future(...)``
        (no thread-pool hand-off per flush: a stream worker flushes hundreds of times a second). Without
        a running writer thread the flush runs here, in the caller."""
        fut: Future[bool] = Future()
        with self._cond:
            thread = self._thread
            if not self._closed and thread is not None and thread.is_alive():
                self._flush_requested += 1
                self._flush_waiters.append((self._flush_requested, fut))
                self._cond.notify_all()
                return fut
        fut.set_result(self.flush())
        return fut

    def _resolve_flush_waiters(self, upto: int | None, ok: bool) -> None:
        """Complete the flush_future()s whose target is reached (all of them when `upto` is None)."""
        limit = math.inf if upto is None else upto
        with self._cond:
            ready = [f for t, f in self._flush_waiters if t <= limit]
            self._flush_waiters = [(t, f) for t, f in self._flush_waiters if t > limit]
        for f in ready:
            f.set_result(ok)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread after writing everything; whatever cannot be written is spilled to the spool."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._stop = True
            self._cond.notify_all()
            thread = self._thread
        with contextlib.suppress(Exception):
            atexit.unregister(self._close_at_exit)
        if thread is not None and thread.is_alive():
            thread.join(timeout_s)
            if thread.is_alive():
                logger.error("request log: writer thread did not stop within %.1fs; spilling", timeout_s)
                self._abandon()
        else:
            with self._work_lock:
                try:
                    ok = self._flush_cycle(final=True)
                except Exception:
                    logger.exception("request log: final flush failed")
                    ok = False
                    with contextlib.suppress(Exception):
                        self._spill_memory(keep=0)
            with self._cond:
                self._flush_ok = ok
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            ok = self._flush_ok
        self._resolve_flush_waiters(None, ok)  # a thread that did not stop in time leaves none waiting
        self._engine.dispose()

    def stats(self) -> dict[str, Any]:
        """Counters: logged, written, buffered, peak_buffered, spilled_files, spilled_records,
        replayed_files, replayed_records, rejected_records, spool_files (waiting on disk), failures,
        last_error, db_up."""
        with self._cond:
            out = dict(self._stats)
            out["buffered"] = self._mem
        try:
            out["spool_files"] = sum(1 for _ in self._list_spool())
        except OSError:
            out["spool_files"] = None
        return out

    # ----------------------------------------------------------------------------------------------
    # log() helpers

    def _overflow_locked(self, record: Any) -> None:
        """Memory full (caller holds the lock): move the oldest queued record to the overflow file."""
        victim = self._queue.popleft() if self._queue else record
        if victim is not record:
            self._queue.append(record)
        try:
            if self._overflow is None:
                self._overflow = _SpoolFile(self._spool_dir)
                self._stats["spilled_files"] += 1
            self._overflow.write(_encode_record(victim))
            self._stats["spilled_records"] += 1
        except Exception as exc:
            # disk trouble: keep the record in memory (over the bound) rather than lose it
            if victim is not record:
                self._queue.appendleft(victim)
            else:
                self._queue.append(record)
            self._mem += 1
            self._stats["peak_buffered"] = max(self._stats["peak_buffered"], self._mem)
            self._stats["failures"] += 1
            self._stats["last_error"] = _describe(exc)
            logger.error("request log: cannot spill to %s: %s", self._spool_dir, exc)
        self._cond.notify()

    def _spill_now(self, records: list[Any]) -> None:
        """Write ``records`` to a spool file right now (used after close())."""
        if not records:
            return
        path, n = _write_spool_file(self._spool_dir, (_encode_record(r) for r in records))
        with self._cond:
            self._stats["spilled_files"] += 1
            self._stats["spilled_records"] += n
        logger.warning("request log: spilled %d record(s) to %s", n, path.name)

    # ----------------------------------------------------------------------------------------------
    # the thread

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(self._has_work, timeout=self._wait_timeout())
                stop = self._stop
                flush_target = self._flush_requested
                flush_wanted = flush_target > self._flush_done
            try:
                with self._work_lock:
                    if stop:
                        ok = self._flush_cycle(final=True)
                    elif flush_wanted:
                        ok = self._flush_cycle(final=False)
                    else:
                        self._regular_cycle()
            except Exception as exc:  # a bug, or the disk: do not let the thread die
                logger.exception("request log: writer cycle failed")
                with self._cond:
                    self._stats["failures"] += 1
                    self._stats["last_error"] = _describe(exc)
                ok = False
                if stop:
                    with contextlib.suppress(Exception):
                        self._spill_memory(keep=0)
                    with contextlib.suppress(Exception):
                        self._rotate_overflow()
                else:
                    time.sleep(min(self._retry_max_s, 1.0))
            if stop:
                with self._cond:
                    self._flush_ok = ok
                    self._flush_done = self._flush_requested
                    self._cond.notify_all()
                self._resolve_flush_waiters(None, ok)
                return
            if flush_wanted:
                with self._cond:
                    self._flush_ok = ok
                    self._flush_done = max(self._flush_done, flush_target)
                    self._cond.notify_all()
                self._resolve_flush_waiters(flush_target, ok)

    def _has_work(self) -> bool:
        """Wake-up condition of the thread (called with the lock held)."""
        if self._stop or self._flush_requested > self._flush_done:
            return True
        now = time.monotonic()
        ready = now >= self._next_attempt
        if ready and (len(self._queue) >= self._batch_size or self._spool_backlog):
            return True
        return self._mem >= self._max_buffer and now >= self._spill_retry_at

    def _wait_timeout(self) -> float:
        delay = self._next_attempt - time.monotonic()
        return max(0.005, min(self._flush_interval_s, delay if delay > 0 else self._flush_interval_s))

    def _regular_cycle(self) -> None:
        now = time.monotonic()
        if now >= self._next_attempt:
            if now >= self._next_scan:  # pick up files spilled by other processes sharing the folder
                self._spool_backlog = True
                self._next_scan = now + SPOOL_SCAN_INTERVAL_S
            with self._cond:
                pending = self._mem
            try:
                if pending:
                    self._ensure_migrated()
                    self._write_memory(pending)
                    self._db_ok()
                if self._spool_backlog:
                    self._replay_spool(max_files=1)
            except _DatabaseDown as exc:
                self._db_failed(exc.__cause__ or exc)
        self._rotate_overflow()
        self._spill_if_full()

    def _flush_cycle(self, final: bool) -> bool:
        """Write all memory (or spill it if the database is down), seal the overflow file, replay the
        spool. Returns True if everything ended up in the database."""
        self._cycle_clean = True
        with self._cond:
            pending = self._mem
        db_ok = False
        try:
            self._ensure_migrated()
            self._write_memory(None if final else pending)
            db_ok = True
        except _DatabaseDown as exc:
            self._db_failed(exc.__cause__ or exc)
        if not db_ok:
            self._spill_memory(keep=0)
        self._rotate_overflow()
        now = time.monotonic()
        if final or now >= self._next_scan:  # files other processes spilled meanwhile
            self._spool_backlog = True
            self._next_scan = now + SPOOL_SCAN_INTERVAL_S
        if db_ok:
            try:
                if self._spool_backlog:  # set by whoever spills: a flush per batch does not list the folder
                    self._replay_spool(max_files=None)
                self._db_ok()
            except _DatabaseDown as exc:
                self._db_failed(exc.__cause__ or exc)
                db_ok = False
        return db_ok and self._cycle_clean and not self._spool_backlog

    # ----------------------------------------------------------------------------------------------
    # database work (callers hold _work_lock)

    def _ensure_migrated(self) -> None:
        if self._migrated:
            return
        try:
            migrate_engine(self._engine, self._schema)
        except CommandError as exc:
            # e.g. the database is at a newer revision (rolling deploy): the table is there, write anyway
            logger.error("request log: migration failed (%s); writing anyway", exc)
        except Exception as exc:
            raise _DatabaseDown from exc
        self._migrated = True

    def _db_ok(self) -> None:
        self._backoff_s = self._retry_initial_s
        self._next_attempt = 0.0
        with self._cond:
            was_up = self._stats["db_up"]
            self._stats["db_up"] = True
        if not was_up:
            logger.info("request log: database reachable")

    def _db_failed(self, exc: BaseException) -> None:
        self._migrated = False  # the database may have been recreated: re-check on reconnection
        self._next_attempt = time.monotonic() + self._backoff_s
        delay = self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, self._retry_max_s)
        with contextlib.suppress(Exception):
            self._engine.dispose()
        with self._cond:
            was_up = self._stats["db_up"]
            self._stats["db_up"] = False
            self._stats["failures"] += 1
            self._stats["last_error"] = _describe(exc)
        log = logger.warning if was_up or self._stats["failures"] == 1 else logger.debug
        log("request log: database unavailable, retrying in %.2fs: %s", delay, _describe(exc))

    def _write_memory(self, limit: int | None) -> None:
        """Insert up to ``limit`` records (all if None) from memory, oldest first, one transaction per
        batch. Raises _DatabaseDown; the failed batch stays in ``_inflight`` for the next attempt."""
        done = 0
        while limit is None or done < limit:
            with self._cond:
                if self._abandoned:
                    return
                retry = bool(self._inflight)  # an earlier attempt at this batch may have committed
                if not retry:
                    take = min(self._batch_size, len(self._queue))
                    if limit is not None:
                        take = min(take, limit - done)
                    if take <= 0:
                        return
                    popleft = self._queue.popleft
                    self._inflight = [popleft() for _ in range(take)]
                batch = self._inflight
            rows: list[dict[str, Any]] = []
            unusable: list[Any] = []
            for record in batch:
                try:
                    rows.append(_to_row(record))
                except Exception:
                    unusable.append(record)
            if unusable:
                self._reject_lines(_encode_record(r) for r in unusable)
                with self._cond:
                    if self._abandoned:
                        return
                    self._inflight = batch = [r for r in batch if not any(r is u for u in unusable)]
                    self._mem -= len(unusable)
                done += len(unusable)
            inserted = self._insert_rows(rows, first_attempt=not retry)
            with self._cond:
                if self._abandoned:
                    return
                self._inflight = []
                self._mem -= len(batch)
                self._stats["written"] += inserted
            done += len(batch)

    def _insert_rows(self, rows: list[dict[str, Any]], first_attempt: bool = True) -> int:
        """Insert ``rows`` in one transaction; rows the database refuses go to the rejected folder.
        Returns the number of rows inserted. COPY (PostgreSQL) only on a batch's ``first_attempt``: a retry
        may follow a COMMIT that succeeded, and only the insert skips rows already there."""
        if not rows:
            return 0
        try:
            with self._engine.begin() as conn:
                if conn.dialect.name == "postgresql" and first_attempt:
                    self._copy_rows(conn, rows)
                else:
                    conn.execute(self._insert, rows)
            return len(rows)
        except Exception as exc:
            if _is_connectivity_error(exc):
                raise _DatabaseDown from exc
            first_error = exc
        good, bad = self._partition(rows, first_error)
        if bad:
            self._reject_lines(_encode_row({**row, "_error": err}) for row, err in bad)
        if good:
            try:
                with self._engine.begin() as conn:
                    conn.execute(self._insert, good)
            except Exception as exc:
                raise _DatabaseDown from exc
        return len(good)

    def _copy_rows(self, conn: Any, rows: list[dict[str, Any]]) -> None:
        """PostgreSQL: COPY instead of executemany. psycopg encodes the rows in C, so a batch holds the
        GIL (and so the API's event loop) several times shorter (bench: ~17k -> see docs/benchmarks.md)."""
        table = f'"{self._schema}".prediction_log' if self._schema else "prediction_log"
        raw = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(COPY_COLUMNS)}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(
                    tuple(_dumps(r[c]).decode() if c in JSON_COLUMNS else r[c] for c in COPY_COLUMNS)
                )

    def _partition(
        self, rows: list[dict[str, Any]], first_error: BaseException
    ) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
        """Split rows into insertable and refused ones by rolled-back trial inserts.

        If the database refuses every row (including a known-good probe row) the problem is the database
        (missing table, permissions...), not the data: raise _DatabaseDown so everything is retried.
        """
        probe = {
            "request_id": "probe",
            "model": "probe",
            "model_version": "probe",
            "entity_key": {},
            "inputs": {},
            "features": {},
            "prediction": 0.0,
            "latency_ms": 0.0,
            "created_at": _utcnow(),
            "record_id": None,
        }
        try:
            self._trial_insert(probe)
        except Exception as exc:
            raise _DatabaseDown from exc
        logger.error("request log: batch refused (%s); isolating the offending rows", _describe(first_error))
        good: list[dict[str, Any]] = []
        bad: list[tuple[dict[str, Any], str]] = []
        for row in rows:
            try:
                self._trial_insert(row)
            except Exception as exc:
                if _is_connectivity_error(exc):
                    raise _DatabaseDown from exc
                bad.append((row, _describe(exc)))
            else:
                good.append(row)
        return good, bad

    def _trial_insert(self, row: dict[str, Any]) -> None:
        with self._engine.connect() as conn:
            trans = conn.begin()
            try:
                conn.execute(self._insert, [row])
            finally:
                trans.rollback()

    # ----------------------------------------------------------------------------------------------
    # spool (callers hold _work_lock)

    def _list_spool(self) -> Iterator[Path]:
        with os.scandir(self._spool_dir) as it:
            for entry in it:
                if entry.name.endswith(SPOOL_SUFFIX) and not entry.name.startswith("."):
                    yield Path(entry.path)

    def _salvage_orphans(self) -> None:
        """Rename temporary spool files of crashed processes into place so they get replayed."""
        now = time.time()
        with os.scandir(self._spool_dir) as it:
            candidates = [
                Path(e.path)
                for e in it
                if e.name.startswith(".") and e.name.endswith(SPOOL_SUFFIX + TMP_SUFFIX)
            ]
        for tmp in candidates:
            try:
                if now - tmp.stat().st_mtime < ORPHAN_TMP_AGE_S:
                    continue
            except FileNotFoundError:
                continue
            with _locked_spool_file(tmp) as fh:
                if fh is None:
                    continue
                final = tmp.with_name(tmp.name[1 : -len(TMP_SUFFIX)])
                os.rename(tmp, final)
                logger.warning("request log: salvaged orphan spool file %s", final.name)

    def _replay_spool(self, max_files: int | None) -> None:
        """Replay spool files oldest first (at most ``max_files``; None: until none is left), one
        transaction per file, each deleted right after its commit. Files another process holds are
        skipped. Updates ``_spool_backlog``. Raises _DatabaseDown."""
        replayed = 0
        while True:
            try:
                self._salvage_orphans()
                files = sorted(self._list_spool())
            except FileNotFoundError:
                files = []
            progressed = False
            for path in files:
                if max_files is not None and replayed >= max_files:
                    self._spool_backlog = True
                    return
                self._ensure_migrated()
                with _locked_spool_file(path) as fh:
                    if fh is None:
                        continue  # another process has it, or it is gone
                    self._replay_file(path, fh)
                replayed += 1
                progressed = True
                self._db_ok()
            if not progressed:  # nothing left that we can take
                self._spool_backlog = False
                return
            # list again: a file may have been rewritten (refused rows) or spilled by another process

    def _replay_file(self, path: Path, fh: BinaryIO) -> None:
        bad_lines: list[bytes] = []
        count = 0
        try:
            with self._engine.begin() as conn:
                batch: list[dict[str, Any]] = []
                for line in fh:
                    if not line.strip():
                        continue
                    try:
                        batch.append(_decode_row(line))
                    except Exception as exc:
                        bad_lines.append(
                            _dumps(
                                {
                                    "_error": f"bad spool line: {exc!r}",
                                    "_raw": line.decode("utf-8", "replace"),
                                }
                            )
                            + b"\n"
                        )
                        continue
                    if len(batch) >= self._batch_size:
                        conn.execute(self._insert, batch)
                        count += len(batch)
                        batch = []
                if batch:
                    conn.execute(self._insert, batch)
                    count += len(batch)
        except Exception as exc:
            if _is_connectivity_error(exc):
                raise _DatabaseDown from exc
            self._sanitize_file(path, fh, exc)
            return
        if bad_lines:
            self._reject_lines(bad_lines)
        path.unlink()
        _fsync_dir(self._spool_dir)
        with self._cond:
            self._stats["written"] += count
            self._stats["replayed_files"] += 1
            self._stats["replayed_records"] += count
        logger.info("request log: replayed %d record(s) from %s", count, path.name)

    def _sanitize_file(self, path: Path, fh: BinaryIO, first_error: BaseException) -> None:
        """A spool file holds rows the database refuses: move those to rejected/, rewrite the rest as a
        new spool file (replayed next), delete the original."""
        fh.seek(0)
        rows: list[dict[str, Any]] = []
        bad_lines: list[bytes] = []
        for line in fh:
            if not line.strip():
                continue
            try:
                rows.append(_decode_row(line))
            except Exception as exc:
                bad_lines.append(_dumps({"_error": f"bad spool line: {exc!r}"}) + b"\n")
        good, bad = self._partition(rows, first_error)
        bad_lines.extend(_encode_row({**row, "_error": err}) for row, err in bad)
        if bad_lines:
            self._reject_lines(bad_lines)
        if good:
            _write_spool_file(self._spool_dir, (_encode_row(r) for r in good))
        path.unlink()
        _fsync_dir(self._spool_dir)
        self._spool_backlog = True

    def _reject_lines(self, lines: Iterable[bytes]) -> None:
        path, n = _write_spool_file(self._rejected_dir, lines)
        self._cycle_clean = False
        with self._cond:
            self._stats["rejected_records"] += n
        logger.error("request log: %d record(s) refused by the database, kept in %s", n, path)

    def _spill_if_full(self) -> None:
        """Database down and memory full: spill the oldest records down to half the buffer."""
        with self._cond:
            full = not self._stats["db_up"] and self._mem >= self._max_buffer
        if full and time.monotonic() >= self._spill_retry_at:
            self._spill_memory(keep=self._max_buffer // 2)

    def _spill_memory(self, keep: int) -> None:
        """Spill the oldest records from memory (in-flight batch first) until ``keep`` remain."""
        with self._cond:
            if self._abandoned:
                return
            n = self._mem - keep
            if n <= 0:
                return
            records = self._inflight[:n]
            self._inflight = self._inflight[n:]
            popleft = self._queue.popleft
            records.extend(popleft() for _ in range(n - len(records)))
            self._mem -= len(records)
        try:
            path, count = _write_spool_file(self._spool_dir, (_encode_record(r) for r in records))
        except Exception as exc:
            with self._cond:
                self._queue.extendleft(reversed(records))
                self._mem += len(records)
                self._stats["failures"] += 1
                self._stats["last_error"] = _describe(exc)
            self._spill_retry_at = time.monotonic() + self._backoff_s
            logger.error("request log: cannot spill to %s: %s", self._spool_dir, exc)
            raise
        self._spool_backlog = True
        with self._cond:
            self._stats["spilled_files"] += 1
            self._stats["spilled_records"] += count
        logger.warning("request log: database down, spilled %d record(s) to %s", count, path.name)

    def _rotate_overflow(self) -> None:
        """Seal the overflow file log() has been appending to (fsync + rename) so it can be replayed."""
        with self._cond:
            overflow, self._overflow = self._overflow, None
        if overflow is None:
            return
        try:
            overflow.commit()
        except Exception:
            logger.exception("request log: could not seal overflow spool file %s", overflow.tmp)
            raise
        self._spool_backlog = True

    # ----------------------------------------------------------------------------------------------
    # shutdown helpers

    def _abandon(self) -> None:
        """close() timed out (thread stuck in a database call): spill what is left from the caller.

        The in-flight batch is spilled too, so it may end up twice in the table if the stuck insert
        eventually commits: duplicates rather than losses.
        """
        with self._cond:
            self._abandoned = True
            records = [*self._inflight, *self._queue]
            self._inflight = []
            self._queue.clear()
            self._mem = 0
            overflow, self._overflow = self._overflow, None
            self._flush_ok = False
        if overflow is not None:
            with contextlib.suppress(Exception):
                overflow.commit()
        try:
            self._spill_now(records)
        except Exception:
            logger.exception("request log: LOST %d record(s): cannot spill them", len(records))

    def _close_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.close(timeout_s=5.0)


def writer_from_settings(settings: Any) -> RequestLogWriter:
    """The writer the settings describe (core.settings.Settings): the API and the stream worker use it."""
    return RequestLogWriter(
        url=settings.effective_request_log_url,
        schema=settings.request_log_schema,
        spool_dir=settings.effective_spool_dir,
        batch_size=settings.request_log_batch_size,
        flush_interval_s=settings.request_log_flush_interval_s,
        max_buffer=settings.request_log_max_buffer,
    )


def _idempotent_insert(table: Table, dialect: str) -> Insert:
    """``INSERT ... ON CONFLICT (record_id) DO NOTHING`` where the dialect has it, a plain insert elsewhere."""
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=["record_id"])
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=["record_id"])
    return insert(table)


def _make_engine(url: str) -> Engine:
    u = make_url(url)
    kwargs: dict[str, Any] = {
        "json_serializer": _json_serializer,
        "json_deserializer": orjson.loads,
    }
    if u.get_backend_name() == "sqlite":
        if u.database in (None, "", ":memory:"):
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            # a fresh connection per use: a moved/removed database file is noticed at once
            kwargs["poolclass"] = NullPool
    else:
        # no pool_pre_ping: it costs a round trip per batch (a stream worker flushes hundreds a second);
        # a dead pooled connection fails the write instead, `_db_failed` disposes the pool and the retry
        # (which the batch waits for in `_inflight`) connects afresh
        kwargs.update(pool_size=2, max_overflow=2, pool_recycle=1800)
        if u.get_backend_name() == "postgresql" and "connect_timeout" not in u.query:
            kwargs["connect_args"] = {"connect_timeout": 5}
    return create_engine(u, **kwargs)
