"""The review queue: items queued with reasons, decided by a person, emitted by the daemon; the review CLI."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edge_agent.cli.main import main
from edge_agent.pipelines.bench.config import BenchConfig
from edge_agent.pipelines.bench.fields import load_reasons
from edge_agent.pipelines.bench.inspect import InspectionResult, Rules, evaluate
from edge_agent.pipelines.bench.review import ReviewDesk, ReviewError, ReviewQueue, ReviewRequest, decide, save_image
from edge_agent.pipelines.bench.rules_config import ReviewConfig
from edge_agent.pipelines.bench.types import Barcode, ImageReading, QualityReport, TextLine
from edge_agent.settings import set_value

RULES = Rules.from_config(BenchConfig())
OK = QualityReport(True, (), 300.0, 140.0, 0.0, True)


def result(quantity_conf: float = 0.6, engine: str = "onnx") -> InspectionResult:
    texts = [
        ("订单号：123456789012", 0.98),
        ("SKU：AB-1234-BLK-M", 0.97),
        ("数量：2", quantity_conf),
        ("退货原因：破损", 0.97),
        ("客户ID：C0123456789", 0.97),
        ("退货日期：2025-03-27", 0.97),
        ("收件人：王芳 电话：13812345678", 0.95),
    ]
    # every character read with certainty: no letter/digit ambiguity, only the line confidences matter
    lines = tuple(TextLine(t, c, (10, 40 * i, 500, 30), (1.0,) * len(t)) for i, (t, c) in enumerate(texts))
    reading = ImageReading(OK, lines, (Barcode("123456789012", "Code128"),), engine, {"ocr": 100.0})
    return evaluate(reading, RULES, manifest=None, today=date(2025, 3, 28))


def test_evaluate__record_body_has_fields_and_no_personal_data() -> None:
    res = result(0.97)
    assert not res.needs_review
    body = res.record_body()
    assert body["human_reviewed"] is False and body["order_check"]["agree"] is True
    assert body["fields"]["quantity"] == 2 and body["engine"] == "onnx"
    dumped = json.dumps(body, ensure_ascii=False)
    assert "王芳" not in dumped and "13812345678" not in dumped and "[PHONE]" in dumped


def test_evaluate__tesseract_confidence_is_discounted() -> None:
    # tesseract was measured over-confident on generated slips: 0.93 is not enough from it
    res = result(0.93, engine="tesseract")
    assert res.confidence["quantity"] == pytest.approx(0.837)
    assert ("low_confidence", "quantity") in {(i.code, i.field) for i in res.review_reasons}
    assert not result(0.93).needs_review


def test_review_queue__accept_then_emit(tmp_path: Path) -> None:
    res = result()
    assert res.needs_review and [i.code for i in res.review_reasons] == ["low_confidence"]
    with ReviewQueue(tmp_path / "review.db") as q:
        item_id = q.add(res, None)
        assert [i.id for i in q.list("pending")] == [item_id]
        assert q.pending_records() == []
        q.accept(item_id, "li.lei", "count checked")
        with pytest.raises(ReviewError, match=r"already decided by li.lei"):
            q.accept(item_id, "han.mei")
        [(rid, body)] = q.pending_records()
        assert rid == item_id and body["human_reviewed"] is True and body["reviewer"] == "li.lei"
        assert body["changes"] == {} and body["why"] == "count checked" and body["reviewed_at"].endswith("Z")
        q.mark_emitted(item_id)
        assert q.pending_records() == [] and q.counts() == {"pending": 0, "decided": 0, "emitted": 1}
        with pytest.raises(ReviewError, match="not waiting to be emitted"):
            q.mark_emitted(item_id)
    assert (tmp_path / "review.db").stat().st_mode & 0o777 == 0o600


def test_review_queue__correct_records_what_changed_and_why(tmp_path: Path) -> None:
    with ReviewQueue(tmp_path / "review.db") as q:
        item_id = q.add(result(), None)
        with pytest.raises(ReviewError, match=r"quantity: expected a whole number >= 1, got 'two'"):
            q.correct(item_id, "li.lei", {"quantity": "two"}, "recount")
        with pytest.raises(ReviewError, match=r"expected a reason for the change"):
            q.correct(item_id, "li.lei", {"quantity": "3"}, " ")
        with pytest.raises(ReviewError, match=r"colour: unknown field"):
            q.correct(item_id, "li.lei", {"colour": "red"}, "x")
        q.correct(item_id, "li.lei", {"quantity": "3", "sku": "AB-1234-BLK-M"}, "three in the box")
        [(_, body)] = q.pending_records()
    # the unchanged SKU is not listed as a change
    assert body["changes"] == {"quantity": {"from": 2, "to": 3}}
    assert body["fields"]["quantity"] == 3 and body["confidence"]["quantity"] == 1.0
    assert body["field_source"]["quantity"] == "review" and body["why"] == "three in the box"


def test_review_queue__unknown_item_and_status(tmp_path: Path) -> None:
    with ReviewQueue(tmp_path / "review.db") as q:
        with pytest.raises(ReviewError, match=r"review item 7: not found"):
            q.accept(7, "x")
        with pytest.raises(ReviewError, match=r"status: expected one of pending, decided, emitted, all"):
            q.list("open")


def test_review_queue__image_deleted_when_reviewed(tmp_path: Path) -> None:
    img = np.full((40, 60, 3), 200, np.uint8)
    path = save_image(tmp_path, img, ReviewConfig())
    assert path is not None and path.exists() and path.stat().st_mode & 0o777 == 0o600
    assert save_image(tmp_path, img, ReviewConfig(keep_images="never")) is None
    with ReviewQueue(tmp_path / "review.db") as q:
        item_id = q.add(result(), path)
        q.accept(item_id, "li.lei")
    assert not path.exists()


def test_review_queue__images_kept_for_hours_then_purged(tmp_path: Path) -> None:
    cfg = ReviewConfig(keep_images="hours", keep_images_h=2)
    path = save_image(tmp_path, np.zeros((8, 8, 3), np.uint8), cfg)
    assert path is not None
    with ReviewQueue(tmp_path / "review.db", review_cfg=cfg) as q:
        q.accept(q.add(result(), path), "li.lei")
        assert path.exists()
        assert q.purge_images(datetime.now(UTC) + timedelta(hours=1)) == 0
        assert q.purge_images(datetime.now(UTC) + timedelta(hours=3)) == 1
    assert not path.exists()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'profile = "bench"\nstate_dir = "{tmp_path / "state"}"\n[device]\nid = "bench-1"\nsite = "wh1"\n',
        encoding="utf-8",
    )
    return cfg


def test_review_cli__before_the_bench_queued_anything_it_makes_no_queue(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`review list` made review.db: run with sudo before the agent's first start, a root-owned file the
    agent could not open."""
    assert main(["review", "list", "--config", str(config_file)]) == 0
    assert "the review queue is empty (the bench has queued nothing yet)" in capsys.readouterr().out
    assert main(["review", "accept", "7", "--config", str(config_file)]) == 1
    assert "no review queue yet at" in capsys.readouterr().err
    assert not (config_file.parent / "state" / "review.db").exists()


def test_review_cli__another_profile_has_no_review_queue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On a truck's config `review list` said the bench had queued nothing yet."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'profile = "truck"\nstate_dir = "{tmp_path}"\n[device]\nid = "t"\nsite = "s"\n', encoding="utf-8")
    for argv in (["review", "list"], ["review", "accept", "7"]):
        assert main([*argv, "--config", str(cfg)]) == 1
        assert f"review: {cfg}: profile 'truck' has no review queue" in capsys.readouterr().err


def test_review_cli__list_show_correct_accept(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ReviewQueue(config_file.parent / "state" / "review.db") as q:
        first, second = q.add(result(), None), q.add(result(), None)
    assert main(["review", "list", "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert f"{first:>6}" in out and "order 123456789012" in out and "low_confidence" in out
    assert main(["review", "show", str(first), "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "quantity" in out and "[PHONE]" in out and "13812345678" not in out
    assert "  order check: scan -, barcode 123456789012, slip 123456789012: they agree\n" in out  # not a Python dict
    rc = main(
        [
            "review",
            "correct",
            str(first),
            "--set",
            "quantity=3",
            "--set",
            "reason=少件，缺配件",
            "--why",
            "recounted",
            "--reviewer",
            "han.mei",
            "--config",
            str(config_file),
        ]
    )
    assert rc == 0
    assert main(["review", "accept", str(second), "--reviewer", "li.lei", "--config", str(config_file)]) == 0
    capsys.readouterr()
    assert main(["review", "accept", str(second), "--config", str(config_file)]) == 1
    assert "already decided" in capsys.readouterr().err
    assert (
        main(["review", "correct", str(second), "--set", "reason=其他原因", "--why", "x", "--config", str(config_file)])
        == 1
    )
    assert "reason: expected one of 破损" in capsys.readouterr().err
    assert main(["review", "list", "--status", "decided", "--json", "--config", str(config_file)]) == 0
    items = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [i["id"] for i in items] == [first, second]
    assert items[0]["changes"] == {"quantity": {"from": 2, "to": 3}, "reason": {"from": "破损", "to": "少件"}}
    assert items[0]["reviewer"] == "han.mei"


def test_review_cli__bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text('profile = "bench"\n[device]\nid = "b"\nsite = "s"\n[bench.review]\nkeep_images = "forever"\n')
    with pytest.raises(SystemExit) as exc:
        main(["review", "list", "--config", str(bad)])
    assert exc.value.code == 2
    assert (
        'bench.review.keep_images: expected "until_reviewed", "hours" or "never", got "forever"'
        in capsys.readouterr().err
    )


def test_review_decide__reject_is_recorded_with_why_and_needs_one(tmp_path: Path) -> None:
    reasons = load_reasons(BenchConfig().validation)
    with ReviewQueue(tmp_path / "review.db") as q:
        item_id = q.add(result(), None)
        with pytest.raises(ReviewError, match=r"reject: expected a reason"):
            decide(q, ReviewRequest(item_id, "li.lei", "reject", why=" "), reasons, 999)
        decide(q, ReviewRequest(item_id, "li.lei", "reject", why="duplicate"), reasons, 999)
        [(_, body)] = q.pending_records()
        assert [i.id for i in q.history()] == [item_id]
    assert body["decision"] == "rejected" and body["why"] == "duplicate" and body["human_reviewed"] is True
    assert body["changes"] == {} and body["fields"]["quantity"] == 2


def test_review_decide__correct_normalises_the_reason_and_refuses_an_unknown_action(tmp_path: Path) -> None:
    reasons = load_reasons(BenchConfig().validation)
    with ReviewQueue(tmp_path / "review.db") as q:
        item_id = q.add(result(), None)
        with pytest.raises(ReviewError, match=r"action: expected one of accept, correct, reject, got 'delete'"):
            decide(q, ReviewRequest(item_id, "li.lei", "delete", why="x"), reasons, 999)  # type: ignore[arg-type]
        with pytest.raises(ReviewError, match=r"reason: expected one of 破损"):
            decide(q, ReviewRequest(item_id, "li.lei", "correct", {"reason": "其他原因"}, "x"), reasons, 999)
        item = decide(
            q, ReviewRequest(item_id, "li.lei", "correct", {"reason": "少件，缺配件"}, "misread"), reasons, 999
        )
    assert item.changes == {"reason": {"from": "破损", "to": "少件"}} and item.reviewer == "li.lei"


def test_review_queue__old_queue_gains_the_reject_decision(tmp_path: Path) -> None:
    db = tmp_path / "review.db"
    old = sqlite3.connect(db)
    old.executescript(
        "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, created_at TEXT NOT NULL, status TEXT NOT NULL "
        "CHECK (status IN ('pending', 'decided', 'emitted')), body TEXT NOT NULL, image_path TEXT, decision TEXT "
        "CHECK (decision IN ('accepted', 'corrected')), reviewer TEXT, reviewed_at TEXT, changes TEXT, why TEXT, "
        "emitted_at TEXT); CREATE INDEX items_status ON items (status, id);"
    )
    old.execute(
        "INSERT INTO items (created_at, status, body) VALUES ('2026-01-01T00:00:00.000Z', 'pending', ?)",
        (json.dumps(result().record_body()),),
    )
    old.commit()
    old.close()
    with ReviewQueue(db) as q:
        [item] = q.list("pending")
        q.reject(item.id, "han.mei", "not a return slip")
        assert q.get(item.id).decision == "rejected"
    with ReviewQueue(db) as q:  # a second open finds the new schema and leaves it alone
        assert q.counts()["decided"] == 1


def test_review_desk__photo_only_while_kept(tmp_path: Path) -> None:
    reasons = load_reasons(BenchConfig().validation)
    img = np.full((40, 60, 3), 200, np.uint8)
    desk = ReviewDesk(tmp_path, ReviewConfig(), reasons, 999)
    try:
        path = save_image(tmp_path, img, ReviewConfig())
        with ReviewQueue(tmp_path / "review.db") as q:
            kept, gone = q.add(result(), path), q.add(result(), None)
        assert desk.photo(kept) == path and desk.photo(gone) is None and desk.photo(999) is None
        desk.decide(ReviewRequest(kept, "li.lei", "accept"))
        assert desk.photo(kept) is None and path is not None and not path.exists()
    finally:
        desk.close()
    hours = ReviewDesk(tmp_path, ReviewConfig(keep_images="hours", keep_images_h=1), reasons, 999)
    try:
        old_path = save_image(tmp_path, img, ReviewConfig())
        with ReviewQueue(tmp_path / "review.db") as q:
            fresh = q.add(result(), old_path)
            q._db.execute(
                "UPDATE items SET created_at = '2020-01-01T00:00:00.000Z' WHERE id = ?", (q.add(result(), old_path),)
            )
        assert hours.photo(fresh) == old_path and hours.photo(fresh + 1) is None, "past its hours: not served"
    finally:
        hours.close()
    never = ReviewDesk(tmp_path, ReviewConfig(keep_images="never"), reasons, 999)
    try:
        assert never.photo(gone) is None
    finally:
        never.close()


def test_status__the_bench_review_queue_waiting_read_beside_an_open_queue(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--config", str(config_file)]) == 0
    assert "review queue:  none yet" in capsys.readouterr().out
    with ReviewQueue(config_file.parent / "state" / "review.db") as q:  # open, as the daemon holds it
        first, _second = q.add(result(), None), q.add(result(), None)
        assert main(["status", "--json", "--config", str(config_file)]) == 0
        review = json.loads(capsys.readouterr().out)["review"]
        assert review["waiting"] == 2 and review["oldest_queued_at"] == q.get(first).created_at
        assert 0 <= review["oldest_age_s"] < 600
        q.accept(first, "li.lei")
        assert main(["status", "--config", str(config_file)]) == 0
        assert "review queue:  1 waiting, oldest queued " in capsys.readouterr().out
    # A file that is not a queue says so, and status still prints the rest.
    (config_file.parent / "state" / "review.db").unlink()
    (config_file.parent / "state" / "review.db").write_bytes(b"not a database" * 100)
    assert main(["status", "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "review queue:  " in out and "review.db: cannot read (file is not a database)" in out
    assert "last error:" in out


def test_review_queue__a_damaged_file_is_moved_aside_and_the_items_still_readable_carried_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "review.db"
    with ReviewQueue(db) as q:
        ids = [q.add(result(), None) for _ in range(300)]
        q.accept(ids[0], "li.lei")
        q.correct(ids[1], "li.lei", {"quantity": 3}, "counted")
        q.mark_emitted(ids[1])
        q._db.execute("DELETE FROM items WHERE id = ?", (ids[-1],))  # the newest item gone, its id still given
        before = {i.id: i for i in q.list("all")}
        q._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = db.stat().st_size // 4096
    with db.open("r+b") as f:  # one page two thirds in overwritten
        f.seek(pages * 2 // 3 * 4096)
        f.write(b"\xa5" * 4096)
    # Not the daemon: the file is left alone, and the error says what to do.
    with pytest.raises(ReviewError, match=r"review.db is damaged .*restart the agent"):
        ReviewQueue(db)
    assert db.exists() and not list(tmp_path.glob("review.db.corrupt-*"))
    # The daemon's bench worker mends it.
    with ReviewQueue(db, mend=True) as q:
        after = {i.id: i for i in q.list("all")}
        assert 200 < len(after) < 300, len(after)
        assert all(after[k] == before[k] for k in after), "every item carried over is as it was"
        assert after[ids[0]].status == "decided" and after[ids[1]].status == "emitted"
        new = q.add(result(), None)
        assert new == max(ids) + 1, "ids go on after the highest ever given, a lost item's too"
    [moved] = [p for p in tmp_path.glob("review.db.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert moved.stat().st_size == pages * 4096, "the damaged file is kept as it was"
    [msg] = [r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"]
    assert f"moved it aside to {moved.name}" in msg and f"with the {len(after)} item(s) still readable" in msg


def test_review_queue__personal_data_in_the_why_is_masked_in_the_record(tmp_path: Path) -> None:
    # A reviewer's free text leaves the device in the record: a phone or a name in it is masked like the slip's.
    with ReviewQueue(tmp_path / "review.db") as q:
        item_id = q.add(result(), None)
        q.correct(item_id, "li.lei", {"quantity": "3"}, "王芳 13812345678 called: 3 in the box of C0123456789")
        [(_, body)] = q.pending_records()
    assert "13812345678" not in body["why"] and "王芳" not in body["why"]
    assert body["why"] == "[NAME] [PHONE] called: 3 in the box of C0123456789"
    with ReviewQueue(tmp_path / "review.db") as q:
        assert q.get(item_id).why.startswith("王芳 13812345678")  # the device's own queue keeps what was typed


def test_review_cli__a_corrected_quantity_above_max_quantity_is_refused(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_value(config_file, "bench.validation.max_quantity", "50")
    with ReviewQueue(config_file.parent / "state" / "review.db") as q:
        item_id = q.add(result(), None)
    base = ["review", "correct", str(item_id), "--why", "recount", "--config", str(config_file)]
    assert main([*base, "--set", "quantity=100000"]) == 1
    err = capsys.readouterr().err
    assert "quantity: expected a whole number 1-50 (bench.validation.max_quantity), got 100000" in err
    assert main([*base, "--set", "quantity=50"]) == 0
