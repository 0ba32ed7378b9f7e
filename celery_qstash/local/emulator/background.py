"""The delivery loop's background threads: ``start_background()`` runs the same steps
as ``tick()``, never polling.

- a dispatcher sleeps until the next due time or until the store reports a change,
  fires schedules, and claims in batches (one transaction for up to
  :data:`CLAIM_BATCH` messages). A message due within :data:`PREPARE_AHEAD_MS`
  that only time holds back (no queue, no flow control) is claimed *ahead*, and its
  request built and signed then; the dispatcher releases it the moment it falls due,
  never before. Messages that fall due together are so not queued behind their own
  claim, signing and request building;
- ``workers`` (``delivery_concurrency``) long-lived attempt threads send them. When
  every one of them has been busy for :data:`SPARE_AFTER_SECONDS` while attempts wait
  (destinations that take long to answer), spare threads are started, up to
  :data:`MAX_SPARES`, and each ends after :data:`SPARE_IDLE_SECONDS` without work:
  QStash has no global limit of that kind, and a slow destination must never hold back
  a message to another one (qstash-py's DLQ tests waited behind eight deliveries to a
  destination sleeping 30 s, and failed in three full runs of four);
- a recorder writes the outcomes, many per transaction (group commit), holding them
  back while a burst is still being sent so that recording does not slow it down.

Delivery stays at-least-once: a claimed message is marked in flight in the store, and
one whose outcome was not committed when the process died is sent again after a
restart. ``stop()`` gives claimed but unsent messages back to the store.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import queue
import threading
import time
from dataclasses import dataclass

from .attempt import Attempts, Outcome
from .sender import Request
from .store import JSON

__all__ = ["PREPARE_AHEAD_MS", "Background"]

log = logging.getLogger("celery_qstash.local.emulator")

#: Longest the background thread sleeps without a reason to wake (clock jumps, safety).
MAX_IDLE_SECONDS = 60.0
#: Pause after a failed background step (a broken database, a bug): never spin.
ERROR_BACKOFF_SECONDS = 1.0
#: How long ``stop()`` lets in-flight attempts record their outcome; the rest are
#: left in flight and retried after a restart (at-least-once).
STOP_GRACE_SECONDS = 2.0
#: How far ahead of its due time the background loop claims and prepares a message.
PREPARE_AHEAD_MS = 500
#: Messages claimed in one transaction (it holds the store's lock: publishes wait).
CLAIM_BATCH = 256
#: Claimed messages the background loop holds at once (prepared, queued, in flight,
#: waiting to be recorded): what a crash would send again.
MAX_HELD = 2048
#: Outcomes recorded in one transaction at most.
MAX_GROUP = 512
#: How long the recorder holds outcomes back while attempts are still being sent.
GROUP_LINGER_SECONDS = 0.25
#: Attempts wait this long for a busy attempt thread before spare threads are started
#: (a burst of quick deliveries drains well within it and starts none).
SPARE_AFTER_SECONDS = 0.2
#: Spare attempt threads at most, beyond ``workers``.
MAX_SPARES = 120
#: A spare thread ends after this long without an attempt to make.
SPARE_IDLE_SECONDS = 5.0
#: How long ``settle()`` waits for the dispatcher at most.
SETTLE_SECONDS = 2.0


@dataclass(order=True)
class _Job:
    """A claimed message on its way: due time, and its request once built."""

    due_ms: int
    order: int
    message: JSON = dataclasses.field(compare=False)
    request: Request | None = dataclasses.field(default=None, compare=False)


class Background(Attempts):
    """The dispatcher, the attempt threads and the recorder."""

    workers: int

    def _init_background(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Claimed messages for the attempt threads; None tells one thread to end.
        self._work: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        #: Outcomes for the recorder; None tells it to end.
        self._outcomes: queue.SimpleQueue[Outcome | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._recorder: threading.Thread | None = None
        #: Claimed ahead, not yet due (the dispatcher's own: no lock).
        self._prepared: list[_Job] = []
        self._order = 0
        #: The latest time the dispatcher has claimed up to.
        self._horizon_ms = -1
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        #: Claimed and not yet recorded / handed to the attempt threads and not yet sent.
        self._held = 0
        self._sending = 0
        #: Handed out and not yet taken by an attempt thread; threads waiting for work;
        #: when a thread last took an attempt (monotonic seconds).
        self._queued = 0
        self._idle = 0
        self._last_take = 0.0
        #: Dispatcher steps begun and finished (``settle()`` waits on them).
        self._pumps_begun = 0
        self._pumps_done = 0
        #: Taken by an attempt thread after stop(): given back to the store.
        self._unsent: list[str] = []

    def wake(self) -> None:
        """Something changed (publish, resume, clock advance): re-check what is due."""
        # Called after every commit: setting an Event takes its lock and notifies even
        # when it is set already, which showed up in a busy loop's profile.
        if not self._wake.is_set():
            self._wake.set()

    def settle(self, timeout: float = SETTLE_SECONDS) -> None:
        """Return once the dispatcher has claimed what is due now (a step begun after
        this call has finished); at once when nothing runs in the background.

        QStash hands a due message on at once; here the dispatcher takes a few
        milliseconds to wake. A flow-control action (``resetRate``, ``pin``, ``pause``)
        settles first, so that a message published before it counts as QStash's would:
        qstash-py's ``test_flow_control_reset_rate`` publishes and resets at once, and
        read ``rateCount: 1`` in one run of three when the claim came after the reset.
        """
        if self._thread is None:
            return
        with self._changed:
            target = self._pumps_begun + 1
        self.wake()
        with self._changed:
            self._changed.wait_for(
                lambda: self._pumps_done >= target or self._stop.is_set(), timeout)

    def start_background(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        # ``workers`` long-lived attempt threads (daemons: one stuck on a slow destination
        # never holds up interpreter exit), fed through a queue: starting a thread per
        # attempt was a tenth of the delivery loop's CPU. Each start gets its own queues,
        # so threads abandoned by an earlier stop() never take new work.
        self._work = queue.SimpleQueue()
        self._outcomes = queue.SimpleQueue()
        self._prepared = []
        self._horizon_ms = -1
        self._unsent = []
        self._queued = self._idle = 0
        self._workers = []
        for _ in range(self.workers):
            self._start_attempt_thread(spare=False)
        self._recorder = threading.Thread(target=self._records, args=(self._outcomes,),
                                          name="qstash-record", daemon=True)
        self._recorder.start()
        self._thread = threading.Thread(target=self._run, name="qstash-delivery", daemon=True)
        self._thread.start()

    def _start_attempt_thread(self, spare: bool) -> None:
        thread = threading.Thread(target=self._attempts, args=(self._work, self._outcomes, spare),
                                  name="qstash-spare" if spare else "qstash-attempt",
                                  daemon=True)
        with self._lock:
            self._workers.append(thread)
        thread.start()

    def stop(self, timeout: float = 5.0, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop the background threads. Claimed messages not yet sent go back to the
        store; in-flight attempts get ``grace`` seconds to record their outcome; slower
        ones are abandoned (their threads are daemons) and, still marked in flight in the
        store, are retried after a restart."""
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return  # not running (or already stopped: the grace was given then)
        self._thread.join(timeout)
        self._thread = None
        unsent = [job.message["id"] for job in self._prepared]
        self._prepared = []
        while True:
            try:
                job = self._work.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                unsent.append(job.message["id"])
                with self._lock:
                    self._queued -= 1
                self._sent(1)
        with self._lock:
            threads, self._workers = self._workers, []
        for _ in threads:
            self._work.put(None)
        with self._changed:
            self._changed.wait_for(lambda: self._sending == 0, grace)
            unsent += self._unsent
            self._unsent = []
        # Recorded before the recorder ends: outcomes it has not written yet are kept.
        self._outcomes.put(None)
        if self._recorder is not None:
            self._recorder.join(grace)
            self._recorder = None
        try:
            self.store.unclaim(unsent)
        except Exception as exc:  # a closed or broken store: a restart recovers them
            log.error("could not give back %d claimed messages: %s", len(unsent),
                      type(exc).__name__)
        with self._lock:
            self._held = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            with self._changed:
                self._pumps_begun += 1
                step = self._pumps_begun
            try:
                self._pump()
                self._add_spares()
                idle = self._idle_seconds()
            except Exception:
                log.exception("delivery loop step failed; trying again in %.0f s",
                              ERROR_BACKOFF_SECONDS)
                # Only stop() cuts the pause short: new publishes must not make it spin.
                self._stop.wait(ERROR_BACKOFF_SECONDS)
                continue
            finally:
                with self._changed:
                    self._pumps_done = step
                    self._changed.notify_all()
            self._wake.wait(idle)

    def _stalled(self) -> bool:
        """Attempts wait while no attempt thread is free (under ``_lock``)."""
        return self._queued > 0 and self._idle == 0

    def _add_spares(self) -> None:
        """Start spare attempt threads when every thread has been busy for a while."""
        with self._lock:
            if not self._stalled():
                return
            if time.monotonic() - self._last_take < SPARE_AFTER_SECONDS:
                return
            room = self.workers + MAX_SPARES - len(self._workers)
            spares = min(self._queued, room)
        for _ in range(spares):
            self._start_attempt_thread(spare=True)

    def _idle_seconds(self) -> float:
        now_ms = self.clock.now() * 1000
        times: list[float] = []
        if self._prepared:
            times.append(self._prepared[0].due_ms)
        with self._lock:
            full = self._held >= MAX_HELD
            stalled = self._stalled()
        if not full:  # when full, a recorded outcome wakes us
            due = self.store.next_due_ms()
            if due is not None:
                # Claim ahead once; a message seen then and held back by more than time
                # (a queue, flow control, the claim's limit) is looked at again when due.
                times.append(due - PREPARE_AHEAD_MS if due - PREPARE_AHEAD_MS > self._horizon_ms
                             else due)
        idle = MAX_IDLE_SECONDS
        if times:
            idle = min(MAX_IDLE_SECONDS, max(0.0, (min(times) - now_ms) / 1000))
        # Attempts waiting for a thread: look again when spares may be due.
        return min(idle, SPARE_AFTER_SECONDS) if stalled else idle

    def _pump(self) -> None:
        now_ms = int(self.clock.now() * 1000)
        self.store.fire_due_schedules(now_ms)
        self._release(now_ms)
        while not self._stop.is_set():
            with self._lock:
                room = MAX_HELD - self._held
            if room <= 0:
                return
            until = now_ms + PREPARE_AHEAD_MS
            limit = min(room, CLAIM_BATCH)
            claimed = self.store.claim(now_ms, limit, until)
            self._horizon_ms = until
            with self._lock:
                self._held += len(claimed)
            due_now: list[_Job] = []
            for due_ms, message in claimed:
                self._order += 1
                job = _Job(due_ms, self._order, message)
                if due_ms <= now_ms:
                    due_now.append(job)  # built and signed by its attempt thread
                    continue
                try:
                    job.request = self.prepare(message, due_ms)
                    self._exchange.build(job.request)
                except Exception:
                    job.request = None  # its attempt builds it again, and fails it
                heapq.heappush(self._prepared, job)
            self._hand_out(due_now)
            if len(claimed) < limit:
                return
            now_ms = int(self.clock.now() * 1000)
            self._release(now_ms)

    def _release(self, now_ms: int) -> None:
        """Hand out the messages claimed ahead that are due now (never earlier)."""
        due: list[_Job] = []
        while self._prepared and self._prepared[0].due_ms <= now_ms:
            due.append(heapq.heappop(self._prepared))
        if not due:
            return
        keep = {id(m) for m in self.store.release([job.message for job in due], now_ms)}
        if len(keep) < len(due):
            with self._lock:
                self._held -= len(due) - len(keep)
            due = [job for job in due if id(job.message) in keep]
        self._hand_out(due)

    def _hand_out(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        with self._lock:
            self._sending += len(jobs)
            self._queued += len(jobs)
        for job in jobs:
            self._work.put(job)

    def _sent(self, count: int) -> None:
        with self._changed:
            self._sending -= count
            self._changed.notify_all()

    def _attempts(self, work: queue.SimpleQueue[_Job | None],
                  outcomes: queue.SimpleQueue[Outcome | None], spare: bool) -> None:
        """One attempt thread: attempts from ``work`` until told to end (a spare also
        ends after :data:`SPARE_IDLE_SECONDS` without one)."""
        with self._exchange.own_pool():
            self._attempts_on(work, outcomes, SPARE_IDLE_SECONDS if spare else None)

    def _attempts_on(self, work: queue.SimpleQueue[_Job | None],
                     outcomes: queue.SimpleQueue[Outcome | None],
                     idle_timeout: float | None) -> None:
        while True:
            with self._lock:
                self._idle += 1
            try:
                job = work.get(timeout=idle_timeout)
            except queue.Empty:
                job = None
            with self._lock:
                self._idle -= 1
                if job is not None:
                    self._queued -= 1
                    self._last_take = time.monotonic()
                else:
                    me = threading.current_thread()
                    if me in self._workers:
                        self._workers.remove(me)
            if job is None:
                return
            try:
                if self._stop.is_set():
                    with self._lock:
                        self._unsent.append(job.message["id"])
                    continue
                now_ms = max(job.due_ms, int(self.clock.now() * 1000))
                outcomes.put(self._try(job.message, now_ms, job.request))
            except Exception as exc:
                if not self._stop.is_set():
                    log.error("delivery attempt crashed: %s", type(exc).__name__)
            finally:
                # After the outcome is queued: the recorder sees "nothing being sent" only
                # once every outcome is in its queue.
                self._sent(1)

    def _records(self, outcomes: queue.SimpleQueue[Outcome | None]) -> None:
        """The recorder: outcomes in groups, one transaction each, until told to end."""
        while True:
            first = outcomes.get()
            if first is None:
                return
            group = [first]
            began = time.monotonic()
            ending = False
            while len(group) < MAX_GROUP:
                try:
                    item = outcomes.get_nowait()
                except queue.Empty:
                    # While attempts are still being sent (a burst), wait for them a little:
                    # one commit for many, and the burst's sends go first.
                    with self._lock:
                        sending = self._sending
                    left = GROUP_LINGER_SECONDS - (time.monotonic() - began)
                    if sending == 0 or left <= 0:
                        break
                    try:
                        item = outcomes.get(timeout=left)
                    except queue.Empty:
                        break
                if item is None:
                    ending = True
                    break
                group.append(item)
            try:
                self._record(group)
            except Exception as exc:
                if not self._stop.is_set():  # after stop() the store may be closed
                    log.error("recording %d delivery outcomes failed: %s", len(group),
                              type(exc).__name__)
            finally:
                with self._changed:
                    self._held -= len(group)
                    self._changed.notify_all()
                self.wake()
            if ending:
                return
