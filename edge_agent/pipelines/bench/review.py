"""The review queue (SQLite): items a person must decide, their decisions, and the records they become.

`decide()` is the one review implementation: `edge-agent review accept|correct|reject` and the
bench station's page both call it. Either only records the decision in the queue; the daemon's
bench worker turns a decided item into its `return_inspection` record (the only chain writer).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edge_agent.errors import EdgeAgentError
from edge_agent.files import move_aside, quick_check_or_raise, rows_past_damage, sqlite_damaged, sqlite_uri
from edge_agent.pipelines.bench.normalize import ReasonTable, match_reason
from edge_agent.pipelines.bench.privacy import mask_text
from edge_agent.pipelines.bench.rules_config import FIELD_NAMES, PrivacyConfig, ReviewConfig

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from edge_agent.pipelines.bench.inspect import InspectionResult

log = logging.getLogger(__name__)

STATUSES = ("pending", "decided", "emitted")
DECISIONS = ("accepted", "corrected", "rejected")
Action = Literal["accept", "correct", "reject"]
ACTIONS: tuple[Action, ...] = ("accept", "correct", "reject")
DB_TIMEOUT_S = 1.0
IMAGES_DIR = "review-images"

_TABLE = """
CREATE TABLE IF NOT EXISTS items (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at  TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'decided', 'emitted')),
    body        TEXT NOT NULL,
    image_path  TEXT,
    decision    TEXT CHECK (decision IN ('accepted', 'corrected', 'rejected')),
    reviewer    TEXT,
    reviewed_at TEXT,
    changes     TEXT,
    why         TEXT,
    emitted_at  TEXT
)
"""
_INDEX = "CREATE INDEX IF NOT EXISTS items_status ON items (status, id)"


class ReviewError(EdgeAgentError):
    """A review action cannot be done: unknown id, already decided, a correction that is not valid."""


@dataclass(frozen=True, slots=True)
class ReviewItem:
    id: int
    created_at: str
    status: str
    body: dict[str, Any]
    image_path: Path | None
    decision: str | None
    reviewer: str | None
    reviewed_at: str | None
    changes: dict[str, Any]
    why: str | None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clean_correction(field: str, raw: Any, max_quantity: int | None = None) -> str | int:
    """A reviewer's value for a field, checked and normalised the way the rules stages normalise it; a quantity
    also obeys the bench's `max_quantity` when given, as a read one does."""
    if field not in FIELD_NAMES:
        raise ReviewError(f"correct: {field}: unknown field (expected one of {', '.join(FIELD_NAMES)})")
    text = str(raw).strip()
    if field == "quantity":
        try:
            qty = int(text)
        except ValueError:
            raise ReviewError(f"correct: quantity: expected a whole number >= 1, got {text!r}") from None
        if qty < 1:
            raise ReviewError(f"correct: quantity: expected a whole number >= 1, got {qty}")
        if max_quantity is not None and qty > max_quantity:
            raise ReviewError(
                f"correct: quantity: expected a whole number 1-{max_quantity} "
                f"(bench.validation.max_quantity), got {qty}"
            )
        return qty
    if field == "return_date":
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            raise ReviewError(f"correct: return_date: expected a date YYYY-MM-DD, got {text!r}") from None
    if not text:
        raise ReviewError(f"correct: {field}: expected a value, got an empty string")
    return text if field == "reason" else text.upper()


# Field values sent in clear anyway: kept readable where a masked text repeats them.
SENT_CODES = ("order_no", "sku", "customer_id")


class ReviewQueue:
    """Items waiting for a person; decided items wait again until the daemon has emitted their record."""

    def __init__(self, db_path: Path, *, review_cfg: ReviewConfig | None = None, mend: bool = False) -> None:
        """Open (creating) the queue. A damaged file is moved aside and its readable items carried over into a
        fresh one when `mend` (the daemon's bench worker, the queue's one long-lived owner); otherwise it is a
        ReviewError that says so, and the file is left alone (a CLI beside the daemon must not move it)."""
        self.db_path = Path(db_path)
        self.cfg = review_cfg or ReviewConfig()
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            if not sqlite_damaged(exc):
                raise
            if not mend:
                raise ReviewError(
                    f"review queue {self.db_path} is damaged ({exc}): restart the agent, which keeps the file "
                    "aside and carries over the items it can still read"
                ) from None
            self._db = self._mend(str(exc))
        os.chmod(self.db_path, 0o600)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=DB_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA busy_timeout={int(DB_TIMEOUT_S * 1000)}")
            quick_check_or_raise(db)
            db.execute(_TABLE)
            db.execute(_INDEX)
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    def _mend(self, reason: str) -> sqlite3.Connection:
        """Move the damaged file aside (kept), start a fresh queue, and carry over every item still readable."""
        moved = move_aside(self.db_path)
        rows, highest = _readable_items(moved)
        db = self._open()
        db.execute("BEGIN IMMEDIATE")
        for row in rows:
            with contextlib.suppress(sqlite3.IntegrityError):  # a cell its CHECK refuses: that item is lost
                db.execute("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        # New ids go on after the highest ever given, lost items' included: records name items by id.
        db.execute("DELETE FROM sqlite_sequence WHERE name = 'items'")
        db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('items', ?)", (highest,))
        db.execute("COMMIT")
        kept = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        waiting = db.execute("SELECT COUNT(*) FROM items WHERE status != 'emitted'").fetchone()[0]
        log.critical(
            "review queue %s was damaged (%s); moved it aside to %s and started a fresh one with the %d item(s) "
            "still readable (%d waiting for a person or for their record). Slips whose items were lost must be "
            "inspected again; keep the file",
            self.db_path,
            reason,
            moved.name,
            kept,
            waiting,
        )
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Queues made before `rejected` existed: SQLite cannot alter a CHECK, so the table is rebuilt once."""
        row = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'items'").fetchone()
        if row is None or "'rejected'" in row[0]:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("ALTER TABLE items RENAME TO items_v1")
            db.execute(_TABLE)
            db.execute("INSERT INTO items SELECT * FROM items_v1")
            db.execute("DROP TABLE items_v1")
            db.execute(_INDEX)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        log.info("review queue %s: schema updated (reject decisions)", self.db_path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ReviewQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ adding

    def add(self, result: InspectionResult, image_path: Path | None) -> int:
        """Queue an item that needs review; returns its id. The body is stored masked, as it would be sent."""
        return self.add_body(result.record_body(), image_path)

    def add_body(self, body: dict[str, Any], image_path: Path | None) -> int:
        cur = self._db.execute(
            "INSERT INTO items (created_at, status, body, image_path) VALUES (?, 'pending', ?, ?)",
            (_now(), json.dumps(body, ensure_ascii=False), str(image_path) if image_path else None),
        )
        item_id = int(cur.lastrowid or 0)
        log.info("review item %s queued (%s reasons)", item_id, len(body.get("review_reasons", [])))
        return item_id

    # ------------------------------------------------------------ reading

    def get(self, item_id: int) -> ReviewItem:
        row = self._db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise ReviewError(f"review item {item_id}: not found")
        return self._item(row)

    def list(self, status: str = "pending") -> builtins.list[ReviewItem]:
        """Items with that status ("pending", "decided", "emitted" or "all"), oldest first."""
        if status == "all":
            rows = self._db.execute("SELECT * FROM items ORDER BY id").fetchall()
        elif status in STATUSES:
            rows = self._db.execute("SELECT * FROM items WHERE status = ? ORDER BY id", (status,)).fetchall()
        else:
            raise ReviewError(f"list: status: expected one of {', '.join((*STATUSES, 'all'))}, got {status!r}")
        return [self._item(r) for r in rows]

    def history(self, limit: int = 200) -> builtins.list[ReviewItem]:
        """Decided and emitted items, newest decision first (what a supervisor looks back over)."""
        rows = self._db.execute(
            "SELECT * FROM items WHERE status != 'pending' ORDER BY reviewed_at DESC, id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [self._item(r) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM items GROUP BY status").fetchall()
        return dict.fromkeys(STATUSES, 0) | {str(s): int(n) for s, n in rows}

    @staticmethod
    def _item(row: tuple[Any, ...]) -> ReviewItem:
        (item_id, created_at, status, body, image_path, decision, reviewer, reviewed_at, changes, why, _emitted) = row
        return ReviewItem(
            int(item_id),
            created_at,
            status,
            json.loads(body),
            Path(image_path) if image_path else None,
            decision,
            reviewer,
            reviewed_at,
            json.loads(changes) if changes else {},
            why,
        )

    # ------------------------------------------------------------ deciding

    def accept(self, item_id: int, reviewer: str, note: str = "") -> ReviewItem:
        """The person checked the values and they are right as read."""
        return self._decide(item_id, reviewer, "accepted", {}, note)

    def correct(
        self, item_id: int, reviewer: str, changes: dict[str, Any], why: str, max_quantity: int | None = None
    ) -> ReviewItem:
        """The person fixed some values; `changes` maps field -> new value, `why` is required."""
        if not changes:
            raise ReviewError("correct: expected at least one field=value change")
        if not why.strip():
            raise ReviewError("correct: expected a reason for the change (why), got an empty string")
        clean = {f: clean_correction(f, v, max_quantity) for f, v in changes.items()}
        return self._decide(item_id, reviewer, "corrected", clean, why)

    def reject(self, item_id: int, reviewer: str, why: str) -> ReviewItem:
        """The photo is not a return to book (not a return slip, a duplicate): `why` is required."""
        if not why.strip():
            raise ReviewError("reject: expected a reason (why), e.g. 'not a return slip' or 'duplicate'")
        return self._decide(item_id, reviewer, "rejected", {}, why)

    def _decide(self, item_id: int, reviewer: str, decision: str, clean: dict[str, Any], why: str) -> ReviewItem:
        if not reviewer.strip():
            raise ReviewError("review: expected the reviewer's name or id, got an empty string")
        item = self.get(item_id)
        if item.status != "pending":
            raise ReviewError(f"review item {item_id}: already {item.status} by {item.reviewer} at {item.reviewed_at}")
        changes = {
            f: {"from": item.body["fields"].get(f), "to": v}
            for f, v in clean.items()
            if item.body["fields"].get(f) != v
        }
        cur = self._db.execute(
            "UPDATE items SET status = 'decided', decision = ?, reviewer = ?, reviewed_at = ?, changes = ?, why = ? "
            "WHERE id = ? AND status = 'pending'",
            (decision, reviewer.strip(), _now(), json.dumps(changes, ensure_ascii=False), why.strip(), item_id),
        )
        if cur.rowcount != 1:
            raise ReviewError(f"review item {item_id}: decided by someone else meanwhile")
        if self.cfg.keep_images == "until_reviewed" and item.image_path is not None:
            item.image_path.unlink(missing_ok=True)
        log.info("review item %s %s", item_id, decision)
        return self.get(item_id)

    # ------------------------------------------------------------ emitting (the daemon)

    def pending_records(self, privacy: PrivacyConfig | None = None) -> builtins.list[tuple[int, dict[str, Any]]]:
        """(id, return_inspection body) of every decided item not yet emitted, oldest first.

        The reviewer's `why` is free text that leaves the device: it is masked like the slip's text.
        """
        out = []
        for item in self.list("decided"):
            body = dict(item.body)
            fields = dict(body["fields"])
            confidence = dict(body.get("confidence", {}))
            sources = dict(body.get("field_source", {}))
            for f, ch in item.changes.items():
                fields[f] = ch["to"]
                confidence[f] = 1.0
                sources[f] = "review"
            body.update(
                fields=fields,
                confidence=confidence,
                field_source=sources,
                human_reviewed=True,
                review_id=item.id,
                reviewer=item.reviewer,
                reviewed_at=item.reviewed_at,
                decision=item.decision,
                changes=item.changes,
                why=mask_text(item.why or "", privacy, keep=[str(fields[n]) for n in SENT_CODES if fields.get(n)]),
            )
            out.append((item.id, body))
        return out

    def mark_emitted(self, item_id: int) -> None:
        """The daemon committed the record to the chain: the item leaves the queue."""
        cur = self._db.execute(
            "UPDATE items SET status = 'emitted', emitted_at = ? WHERE id = ? AND status = 'decided'", (_now(), item_id)
        )
        if cur.rowcount != 1:
            raise ReviewError(f"review item {item_id}: not waiting to be emitted")

    # ------------------------------------------------------------ images

    def purge_images(self, now: datetime | None = None) -> int:
        """Delete raw images past their time: decided items' (until_reviewed), older than keep_images_h (hours)."""
        now = now or datetime.now(UTC)
        if self.cfg.keep_images == "hours":
            cutoff = (now - timedelta(hours=self.cfg.keep_images_h)).isoformat(timespec="milliseconds")
            rows = self._db.execute(
                "SELECT id, image_path FROM items WHERE image_path IS NOT NULL AND created_at < ?",
                (cutoff.replace("+00:00", "Z"),),
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT id, image_path FROM items WHERE image_path IS NOT NULL AND status != 'pending'"
            ).fetchall()
        for item_id, path in rows:
            Path(path).unlink(missing_ok=True)
            self._db.execute("UPDATE items SET image_path = NULL WHERE id = ?", (item_id,))
        return len(rows)


def save_image(state_dir: Path, image_bgr: NDArray[np.uint8], cfg: ReviewConfig) -> Path | None:
    """Keep the raw photo of a queued item in the state dir (mode 0600), or None when images are not kept."""
    if cfg.keep_images == "never":
        return None
    import cv2

    folder = Path(state_dir) / IMAGES_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{uuid.uuid4().hex}.jpg"
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise ReviewError("save_image: JPEG encoding failed")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(buf.tobytes())
    return path


def _readable_items(path: Path) -> tuple[list[tuple[Any, ...]], int]:
    """The items of a damaged queue file that can still be read whole (their body parses), in id order, and the
    highest id it ever gave (as far as can be read); past a damaged page, reading goes on from the next ids (a
    few times)."""
    rows: list[tuple[Any, ...]] = []
    highest = 0
    try:
        db = sqlite3.connect(sqlite_uri(path, "ro"), uri=True, timeout=DB_TIMEOUT_S)
    except sqlite3.Error:
        return rows, highest
    try:
        with contextlib.suppress(sqlite3.Error, TypeError, ValueError):
            highest = int(db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()[0])
        select = "SELECT * FROM items NOT INDEXED WHERE id > ? AND id <= ? ORDER BY id"
        for row in rows_past_damage(db, select, 0, 2**62):
            with contextlib.suppress(ValueError, TypeError):
                if len(row) == 11 and row[2] in STATUSES and isinstance(json.loads(row[3]), dict):
                    rows.append(row)
    finally:
        db.close()
    return rows, max(highest, max((int(r[0]) for r in rows), default=0))


def queue_path(state_dir: Path) -> Path:
    return Path(state_dir) / "review.db"


def waiting(state_dir: Path) -> tuple[int, str | None] | None:
    """How many items wait for a person and when the oldest was queued (UTC ISO), read without writing; None
    when there is no queue yet. For `edge-agent status`, which may run beside the daemon."""
    path = queue_path(state_dir)
    if not path.exists():
        return None
    db = sqlite3.connect(sqlite_uri(path, "ro"), uri=True, timeout=DB_TIMEOUT_S)
    try:
        n, oldest = db.execute("SELECT COUNT(*), MIN(created_at) FROM items WHERE status = 'pending'").fetchone()
    finally:
        db.close()
    return int(n), oldest


# ---------------------------------------------------------------- the one review implementation


@dataclass(frozen=True, slots=True)
class ReviewRequest:
    """One person's decision on one item, as the CLI or the station's page received it."""

    item_id: int
    reviewer: str
    action: Action
    changes: Mapping[str, str] = field(default_factory=dict)  # field -> value as typed (correct only)
    why: str = ""


def decide(queue: ReviewQueue, request: ReviewRequest, reasons: ReasonTable, max_quantity: int) -> ReviewItem:
    """Check and record a decision; the daemon emits the item's record on its next pass.

    A corrected quantity obeys the bench's `max_quantity` as a read one does (a typed 100000 for 10 is refused).
    """
    if request.action == "accept":
        return queue.accept(request.item_id, request.reviewer, request.why)
    if request.action == "reject":
        return queue.reject(request.item_id, request.reviewer, request.why)
    if request.action != "correct":
        raise ReviewError(f"review: action: expected one of {', '.join(ACTIONS)}, got {request.action!r}")
    changes = {str(f).strip(): v for f, v in request.changes.items()}
    if "reason" in changes:
        m = match_reason(str(changes["reason"]), reasons)
        if m is None or m.ambiguous:
            raise ReviewError(
                f"correct: reason: expected one of {', '.join(reasons.canonical)}, got {changes['reason']!r}"
            )
        changes["reason"] = m.reason
    return queue.correct(request.item_id, request.reviewer, changes, request.why, max_quantity)


class ReviewDesk:
    """The review queue as the station sees it: read items, decide through `decide()`, find kept photos.

    One connection shared by the web server's threads, so calls are serialised by a lock.
    """

    def __init__(self, state_dir: Path, review_cfg: ReviewConfig, reasons: ReasonTable, max_quantity: int) -> None:
        self.cfg = review_cfg
        self.reasons = reasons
        self.max_quantity = max_quantity
        self._queue = ReviewQueue(queue_path(state_dir), review_cfg=review_cfg)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._queue.close()

    def pending(self) -> builtins.list[ReviewItem]:
        with self._lock:
            return self._queue.list("pending")

    def get(self, item_id: int) -> ReviewItem:
        with self._lock:
            return self._queue.get(item_id)

    def history(self, limit: int = 200) -> builtins.list[ReviewItem]:
        with self._lock:
            return self._queue.history(limit)

    def decide(self, request: ReviewRequest) -> ReviewItem:
        with self._lock:
            return decide(self._queue, request, self.reasons, self.max_quantity)

    def photo(self, item_id: int) -> Path | None:
        """The kept photo of an item, or None when the config does not (or no longer) keep it."""
        if self.cfg.keep_images == "never":
            return None
        try:
            item = self.get(item_id)
        except ReviewError:
            return None
        path = item.image_path
        if path is None or not path.is_file():
            return None
        if self.cfg.keep_images == "until_reviewed" and item.status != "pending":
            return None
        if self.cfg.keep_images == "hours":
            # Not just until the next purge pass: past its hours a photo is gone for the page at once.
            created = datetime.fromisoformat(item.created_at.replace("Z", "+00:00"))
            if datetime.now(UTC) - created > timedelta(hours=self.cfg.keep_images_h):
                return None
        return path
