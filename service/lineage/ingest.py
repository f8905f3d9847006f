"""Group commit of received OpenLineage events: the requests that arrive together are written together, in
one transaction of a few statements (service/lineage/receiver.store_batch), and each request is answered
once that transaction has committed. Every task of every run posts two or three events, each a few rows: one
transaction (and thread hop, and commit) per event would make the database round trips, not the work, the
limit (bench/lineage_ingest.py).

Nothing is acknowledged before it is committed, and each event is all-or-nothing: should a batch fail (a
deadlock, a constraint), it is rolled back and its events are written one per transaction, so one event's
failure never costs another its place.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.errors import ServiceError
from service.lineage.receiver import Outcome, ReceivedEvent, store_batch

log = logging.getLogger(__name__)

MAX_BATCH = 200
WRITERS = 2  # batches in flight at once: one is written while the next one gathers


@dataclass
class _Item:
    ev: ReceivedEvent
    payload: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Outcome]


class EventWriter:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        forward: Callable[[], bool],
        on_forwardable: Callable[[], None] = lambda: None,
    ):
        """`forward()`: whether stored events are to be forwarded (read per batch: the setting may change);
        `on_forwardable`: called after a commit that stored events to forward."""
        self.sessions, self.forward, self.on_forwardable = sessions, forward, on_forwardable
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    async def write(self, ev: ReceivedEvent, payload: str) -> Outcome:
        """Store the event with whatever else is waiting; its outcome once committed. A caller that goes
        away does not cancel the write (shield): the event is stored or not, never half."""
        self._ensure_started()
        loop = asyncio.get_running_loop()
        item = _Item(ev, payload, loop, loop.create_future())
        self._queue.put(item)
        return await asyncio.shield(item.future)

    def _ensure_started(self) -> None:
        if self._threads:
            return
        with self._lock:
            if not self._threads:
                for n in range(WRITERS):
                    t = threading.Thread(target=self._run, name=f"lineage-writer-{n}", daemon=True)
                    t.start()
                    self._threads.append(t)

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=10)
        self._threads = []

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # this thread's stop signal belongs to another: hand it back
                    break
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[_Item]) -> None:
        forward = self.forward()
        try:
            with session_scope(self.sessions) as s:
                outcomes = store_batch(s, [(i.ev, i.payload) for i in batch], forward=forward)
        except Exception:
            if len(batch) > 1:
                log.warning("a batch of %d lineage events failed: writing them one by one", len(batch), exc_info=True)
                for item in batch:
                    self._write([item])
                return
            log.exception("storing a lineage event failed")
            _settle(batch[0], None, ServiceError("storing the lineage event failed; the transport may retry it"))
            return
        for item, outcome in zip(batch, outcomes, strict=True):
            _settle(item, outcome, None)
        if forward and "stored" in outcomes:
            self.on_forwardable()


def _settle(item: _Item, outcome: Outcome | None, error: BaseException | None) -> None:
    def done() -> None:
        if item.future.done():
            return
        if error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(outcome)  # type: ignore[arg-type]

    try:
        item.loop.call_soon_threadsafe(done)
    except RuntimeError:  # the request's event loop is gone (shutdown): nobody waits for the answer
        pass
