"""What the page shows, read back from committed records: verdicts, today's counts, and the push to open pages.

The chain writer calls `Feed.notify(head_seq)` after each commit; the feed then reads the new
records through its own read-only outbox connection, turns bench records into verdict views and
pushes them to every open page (server-sent events). Nothing here writes SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import statistics
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.pipelines.bench.normalize import doubts_named
from edge_agent.spine.outbox import Outbox, reader

if TYPE_CHECKING:
    from edge_agent.pipelines.bench.review import ReviewDesk, ReviewItem

log = logging.getLogger(__name__)

FIELD_LABELS = {
    "order_no": "Order",
    "sku": "SKU",
    "quantity": "Quantity",
    "reason": "Reason",
    "customer_id": "Customer",
    "return_date": "Return date",
}
RECENT_MAX = 20
UNMEASURED_CAUSE = "nothing wrong with the photo was measured"  # the reader's NO_QUALITY_HINT: not a retake
READ_TIMES_MAX = 5000
SUBSCRIBER_QUEUE = 32  # a page this far behind is dropped; its EventSource reconnects and starts afresh
REASON_WORDS = {
    "low_confidence": "not sure of the reading",
    "ambiguous_value": "could be read two ways",
    "missing_field": "not found on the slip",
    "found_by_shape": "no label names it",
    "bad_format": "does not look right",
    "glare_on_value": "glare over the value",
    "order_mismatch": "scan, barcode and slip disagree",
    "reads_disagree": "two reads of the line differ",
    "image_quality": "photo quality",
}

DETAILED = ("low_confidence", "ambiguous_value")  # their message's (...) is worth the operator's glance


@dataclass(frozen=True, slots=True)
class Levels:
    """Confidence thresholds per field: at or above `ok` is green, above `doubt` amber, else red."""

    ok: dict[str, float]
    doubt: float = 0.6

    def level(self, name: str, value: object, confidence: float) -> str:
        if value is None:
            return "missing"
        if confidence >= self.ok.get(name, 0.85):
            return "high"
        return "mid" if confidence >= self.doubt else "low"


def _plain_reason(issue: dict[str, Any]) -> str:
    """A review reason in words an operator reads at a glance ("Quantity: not sure of the reading (0.61)")."""
    code, field, message = issue.get("code"), issue.get("field"), str(issue.get("message", ""))
    if code == "image_quality":
        return message.removeprefix("photo quality: ").capitalize()
    label = FIELD_LABELS.get(str(field), "") if field else ""
    words = REASON_WORDS.get(str(code))
    if label and words:
        detail = message.split("(", 1)[1].rstrip(")") if "(" in message and code in DETAILED else ""
        return f"{label}: {words}" + (f" ({detail})" if detail else "")
    return message[:1].upper() + message[1:]


def _retake(body: dict[str, Any]) -> tuple[list[str], set[str]]:
    """What a new photo would fix, grouped by cause ("blurry: hold still (SKU, Quantity)"), and those fields.

    The reader's `retake` list names the fields the photo did not give and the measured cause; a cause
    it could not measure (faint or missing print) is not a retake. Bodies from before that list fall
    back to the quality verdict.
    """
    entries = body.get("retake")
    if not isinstance(entries, list):
        quality = body.get("quality") or {}
        return ([] if quality.get("ok", True) else [str(r) for r in quality.get("reasons", [])]), set()
    by_cause: dict[str, list[str]] = {}
    fields: set[str] = set()
    for e in entries:
        if not isinstance(e, dict) or str(e.get("cause", "")).startswith(UNMEASURED_CAUSE):
            continue
        field = e.get("field")
        labels = by_cause.setdefault(str(e.get("cause", "")), [])
        if field:
            fields.add(str(field))
            labels.append(FIELD_LABELS.get(str(field), str(field)))
    lines = [cause + (f" ({', '.join(labels)})" if labels else "") for cause, labels in by_cause.items()]
    return lines, fields


def _doubts(issues: list[dict[str, Any]], name: str, value: object) -> list[dict[str, Any]]:
    """The characters of a field's value the reader could read two ways (letter or digit), with the other
    reading: the review page shows each as a switch."""
    if not isinstance(value, str):
        return []
    named = [
        d
        for i in issues
        if i.get("code") == "ambiguous_value" and i.get("field") == name
        for d in doubts_named(str(i.get("message", "")), value)
    ]
    return [{"at": at, "read": a, "other": b} for at, a, b in sorted(set(named))]


def verdict_view(body: dict[str, Any], levels: Levels, **extra: Any) -> dict[str, Any]:
    """The page's view of one return_inspection body (a record's, or a queued item's)."""
    fields, conf = body.get("fields", {}), body.get("confidence", {})
    issues = list(body.get("review_reasons", []))
    retake, retake_fields = _retake(body)
    doubtful = {str(i.get("field")) for i in issues if i.get("field")} | retake_fields
    # the reader's `field_boxes`: per field, the four corners of the text it was read from, in photo pixels
    boxes = body.get("field_boxes") or body.get("boxes") or {}
    reviewed = bool(body.get("human_reviewed"))
    rows = []
    for name, label in FIELD_LABELS.items():
        value = fields.get(name)
        c = float(conf.get(name, 0.0) or 0.0)
        rows.append(
            {
                "name": name,
                "label": label,
                "value": value,
                "confidence": round(c, 2),
                # A person checked every value of a reviewed record, whatever the reader's confidence was.
                "level": "high" if reviewed and value is not None else levels.level(name, value, c),
                "doubtful": name in doubtful,
                "source": body.get("field_source", {}).get(name),
                "box": boxes.get(name) if isinstance(boxes, dict) else None,
                "doubts": _doubts(issues, name, value),
            }
        )
    check = body.get("order_check") or {}
    if reviewed:
        kind = {"rejected": "rejected"}.get(str(body.get("decision")), "reviewed")
    elif retake:
        kind = "retake"
    elif issues:
        kind = "review"
    else:
        kind = "passed"
    return {
        "kind": kind,
        "fields": rows,
        # A field a retake would fix is said once, in the retake line; the other reasons stay.
        "reasons": [
            _plain_reason(i) for i in issues if i.get("code") != "image_quality" and i.get("field") not in retake_fields
        ],
        "retake": retake,
        "scan": check.get("scan"),
        "barcode": check.get("barcode"),
        "agree": check.get("agree"),
        "read_ms": (body.get("timing_ms") or {}).get("total"),
        "reviewer": body.get("reviewer"),
        "decision": body.get("decision"),
        "changes": body.get("changes") or {},
        "why": body.get("why"),
        "masked_text": body.get("masked_text", ""),
        "label_box": body.get("label_box"),
        "image_size": body.get("image_size"),
        **extra,
    }


def item_view(item: ReviewItem, levels: Levels, photo_url: str | None) -> dict[str, Any]:
    """A queue item: its verdict view plus the queue's own facts."""
    return verdict_view(
        item.body,
        levels,
        review_id=item.id,
        queued_at=item.created_at,
        status=item.status,
        photo=photo_url,
        reviewer=item.reviewer,
        decision=item.decision,
        why=item.why,
        changes=item.changes,
        reviewed_at=item.reviewed_at,
    )


class Counts:
    """Today's bench counts (UTC day), rebuilt from the outbox at start and kept up from the feed."""

    def __init__(self) -> None:
        self.day: date = datetime.now(UTC).date()
        self.passed = self.queued = self.reviewed = self.retakes = self.rejected = 0
        self.read_ms: deque[float] = deque(maxlen=READ_TIMES_MAX)

    def add(self, view: dict[str, Any], ts: str) -> None:
        day = _day(ts)
        if day is None:
            return
        if day > self.day:
            self.reset(day)
        if day != self.day:
            return
        kind = view["kind"]
        if kind == "passed":
            self.passed += 1
        elif kind in ("review", "retake"):
            self.queued += 1
            self.retakes += kind == "retake"
        elif kind == "reviewed":
            self.reviewed += 1
        elif kind == "rejected":
            self.rejected += 1
        if kind in ("passed", "review", "retake") and isinstance(view.get("read_ms"), (int, float)):
            self.read_ms.append(float(view["read_ms"]))

    def reset(self, day: date) -> None:
        """A new day starts from zero."""
        self.day = day
        self.passed = self.queued = self.reviewed = self.retakes = self.rejected = 0
        self.read_ms.clear()

    def to_json(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "inspected": self.passed + self.queued,
            "passed": self.passed,
            "reviewed": self.reviewed + self.rejected,
            "retakes": self.retakes,
            "median_read_ms": round(statistics.median(self.read_ms)) if self.read_ms else None,
        }


def _day(ts: str) -> date | None:
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC).date()
    return None


class Hub:
    """Fan-out of server-sent events to open pages: one bounded queue each, slow pages dropped."""

    def __init__(self) -> None:
        self._subs: set[asyncio.Queue[tuple[str, str] | None]] = set()

    def subscribe(self) -> asyncio.Queue[tuple[str, str] | None]:
        q: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self._subs.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[tuple[str, str] | None]) -> None:
        self._subs.discard(q)

    def publish(self, event: str, data: Any) -> None:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        for q in list(self._subs):
            try:
                q.put_nowait((event, text))
            except asyncio.QueueFull:
                self._subs.discard(q)
                with contextlib.suppress(asyncio.QueueFull):
                    q.get_nowait()
                    q.put_nowait(None)  # tells that page's stream to end

    def close(self) -> None:
        for q in list(self._subs):
            with contextlib.suppress(asyncio.QueueEmpty):
                while True:
                    q.get_nowait()
            q.put_nowait(None)
        self._subs.clear()

    def __len__(self) -> int:
        return len(self._subs)


class Feed:
    """Follows the outbox head; keeps the recent verdicts and today's counts; publishes to the hub."""

    def __init__(
        self,
        db_path: Path,
        levels: Levels,
        desk: ReviewDesk | None,
        photo_url: Callable[[int], str | None],
    ) -> None:
        self.db_path = db_path
        self.levels = levels
        self.desk = desk
        self.photo_url = photo_url
        self.hub = Hub()
        self.counts = Counts()
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_MAX)
        self.last_seq = 0
        self._outbox: Outbox | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ from the chain writer's thread

    def notify(self, head_seq: int) -> None:
        """Called after each commit (any thread): wake the reader in the server's loop."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and head_seq > self.last_seq:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(wake.set)

    # ------------------------------------------------------------ in the server's loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        await asyncio.to_thread(self._catch_up_today)
        self._wake.set()  # anything committed while we read
        while not stop.is_set():
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if stop.is_set():
                break
            self._wake.clear()
            try:
                views = await asyncio.to_thread(self._read_new)
            except Exception as exc:  # noqa: BLE001 - a read error must not stop the page; the next commit retries
                log.warning("station: reading new records failed: %s", exc)
                continue
            for view in views:
                self.hub.publish("verdict", view)
            if views:
                self.hub.publish("counts", self.counts.to_json())
                if self.desk is not None:
                    self.hub.publish("queue", await asyncio.to_thread(self.queue_json))
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._outbox is not None:
                self._outbox.close()
                self._outbox = None

    def _reader(self) -> Outbox:
        self._outbox = reader(self.db_path, self._outbox)
        return self._outbox

    def _catch_up_today(self) -> None:
        """Today's counts and the last verdicts, so a restarted daemon's page is not blank."""
        with self._lock:
            try:
                ob = self._reader()
            except Exception as exc:  # noqa: BLE001 - no outbox yet: start from nothing
                log.debug("station: outbox not readable yet: %s", exc)
                return
            midnight = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00")
            rows = ob.conn.execute(
                "SELECT seq, data FROM records WHERE kind IN ('return_inspection', 'event') AND ts >= ? ORDER BY seq",
                (midnight,),
            ).fetchall()
            self.last_seq = ob.head()[0]
            for view in self._views(json.loads(bytes(data)) for _, data in rows):
                self.recent.appendleft(view)

    def _read_new(self) -> list[dict[str, Any]]:
        with self._lock:
            ob = self._reader()
            records = [json.loads(d) for d in ob.export(since_seq=self.last_seq + 1)]
        if records:
            self.last_seq = max(self.last_seq, *(int(r["seq"]) for r in records))
        views = list(self._views(records))
        for view in views:
            self.recent.appendleft(view)
        return views

    def _views(self, records: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        for rec in records:
            kind, body = rec.get("kind"), rec.get("body") or {}
            view: dict[str, Any] | None
            if kind == "return_inspection":
                view = verdict_view(body, self.levels, seq=rec["seq"], ts=rec["ts"], review_id=body.get("review_id"))
            elif kind == "event" and body.get("event") == "bench_review_queued" and self.desk is not None:
                view = self._queued_view(rec, int(body.get("review_id", 0)))
            else:
                view = None
            if view is None:
                continue
            self.counts.add(view, rec["ts"])
            yield view

    def _queued_view(self, rec: dict[str, Any], item_id: int) -> dict[str, Any] | None:
        from edge_agent.pipelines.bench.review import ReviewError

        if self.desk is None:
            return None
        try:
            item = self.desk.get(item_id)
        except ReviewError:
            return None
        view = item_view(item, self.levels, self.photo_url(item.id))
        view.update(seq=rec["seq"], ts=rec["ts"])
        # The verdict as it was read, even if someone decided meanwhile.
        view["kind"] = "retake" if view["retake"] else "review"
        return view

    # ------------------------------------------------------------ for the pages

    def outbox_depth(self) -> int:
        with self._lock:
            return self._reader().stats().depth

    def queue_json(self) -> list[dict[str, Any]]:
        if self.desk is None:
            return []
        return [item_view(i, self.levels, self.photo_url(i.id)) for i in self.desk.pending()]
