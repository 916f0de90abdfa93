"""Group commit for the SQLite store (issue 15 item 2; docs/benchmarks.md 11).

With ``synchronous=FULL`` every COMMIT fsyncs the WAL on the event loop's
thread: the server does nothing else meanwhile, and ten sessions committing
together pay ten fsyncs one after the other. With group commit the store runs
``synchronous=NORMAL`` (a COMMIT appends its frames to the WAL and returns)
and this flusher thread makes them durable: it notes how many commits have
been appended, fsyncs the WAL once, and then declares all of them durable.
Every commit appended while one fsync runs is covered by the next one, so
concurrent sessions share fsyncs.

The guarantee does not change, because nothing may be *answered* before the
commits that precede the answer are durable: the server holds every byte it
writes to any socket until ``durable`` has caught up with the commits made
before the write (``smdp.server.durable_io``). That hold is the one choke
point; this module only counts and flushes, and knows nothing of sockets.

Why fsyncing the WAL file from another descriptor is enough: fsync flushes
the file's pages, whichever descriptor wrote them. SQLite in WAL mode with
``synchronous=NORMAL`` still syncs the WAL before each checkpoint, the
database after it and the WAL header when the file is reused, so commits a
checkpoint moved into the database are durable there; the WAL keeps its inode
until the last connection closes (``wal_checkpoint(TRUNCATE)`` truncates the
same file), and a changed inode is reopened all the same.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)


class WalFlusher:
    """Counts the commits appended to a WAL and makes them durable in batches.

    ``written`` and ``durable`` only grow. ``note_commit`` is called by the
    store's thread after each COMMIT that wrote; listeners are called from
    the flusher's thread each time ``durable`` moves (or the flusher fails),
    and must hand over to their own thread themselves.
    """

    def __init__(self, database: Path) -> None:
        self.wal = Path(f"{database}-wal")
        self.written = 0
        self.durable = 0
        self.fsyncs = 0
        # Set when an fsync failed: what it should have made durable may be
        # lost, so nothing after it may be answered (PostgreSQL's lesson of
        # 2018: an fsync that failed once cannot be retried into success).
        self.failure: OSError | None = None
        self._listeners: list[Callable[[], None]] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._sleeping = False  # the flusher waits for a commit (note_commit)
        # Held by the thread around each fsync; ``held()`` takes it to keep
        # the flusher from declaring anything durable (tests prove with it
        # that no answer leaves before its fsync).
        self._flushing = threading.Lock()
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._thread = threading.Thread(target=self._run, name="smdp-wal-flusher",
                                        daemon=True)
        self._thread.start()

    def add_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def note_commit(self) -> None:
        """One more commit has been appended to the WAL (the store's thread).

        Only the store's thread writes ``written``. The lock is taken only to
        wake a flusher that sleeps: one busy flushing comes back for this
        commit by itself (it reads ``written`` again after each fsync), and a
        lock and a notify per commit cost the loop's thread a GIL hand-off
        each (3 to 4% of a server's samples under load). No wake-up is lost:
        the flusher says it sleeps before it reads ``written`` for the last
        time, and this reads that after it counts."""
        self.written += 1
        if self._sleeping:
            with self._cond:
                self._cond.notify()

    def is_durable(self) -> bool:
        return self.durable >= self.written and self.failure is None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Nothing becomes durable while inside (for tests of the ordering)."""
        with self._flushing:
            yield

    def stop(self) -> None:
        """Flush what is left, end the thread and close the descriptor."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- the flusher's thread ------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._sleeping = True
                while self.written <= self.durable and not self._stopping:
                    self._cond.wait()
                self._sleeping = False
                if self.written <= self.durable:
                    return  # stopping, and nothing left to flush
                target = self.written
            try:
                with self._flushing:
                    if self.durable < target:
                        self._sync()
                        self._advance(target)
            except CannotOpen as exc:
                # Nothing was lost (no fsync failed): a descriptor could not
                # be had (too many open files?). Try again shortly; answers
                # wait meanwhile.
                log.warning("cannot open %s to flush it (%s); trying again", self.wal,
                            exc.__cause__)
                time.sleep(0.05)
            except OSError as exc:
                self.failure = exc
                log.critical("fsync of %s failed (%s): commits since the last good fsync "
                             "may be lost; no answer will be sent until the server restarts",
                             self.wal, exc)
                self._tell()
                return

    def _advance(self, target: int) -> None:
        with self._cond:
            self.durable = max(self.durable, target)
        self.fsyncs += 1
        self._tell()

    def _tell(self) -> None:
        for listener in list(self._listeners):
            listener()

    def _sync(self) -> None:
        try:
            st = os.stat(self.wal)
        except FileNotFoundError:
            # No WAL: the last connection closed it after a checkpoint, which
            # synced everything into the database file.
            return
        except OSError as exc:
            raise CannotOpen(str(exc)) from exc
        identity = (st.st_dev, st.st_ino)
        if self._fd is None or identity != self._identity:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            try:
                fd = os.open(self.wal, os.O_RDONLY)
            except OSError as exc:
                raise CannotOpen(str(exc)) from exc
            try:
                directory = os.open(self.wal.parent, os.O_RDONLY)
            except OSError as exc:
                os.close(fd)
                raise CannotOpen(str(exc)) from exc
            try:
                # The WAL's directory entry must outlive a power cut too.
                os.fsync(directory)
            finally:
                os.close(directory)
            self._fd, self._identity = fd, identity
        os.fdatasync(self._fd)


class CannotOpen(OSError):
    """The WAL or its directory could not be opened or looked at: no flush
    was tried, so nothing may have been lost (unlike a failed fsync)."""
