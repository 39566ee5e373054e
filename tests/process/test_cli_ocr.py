"""`edge-agent ocr` end to end: generated slip photos, a real label photo, broken files; JSON lines out."""

from __future__ import annotations

import json
import os
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import cv2
import pytest
import zxingcpp

from edge_agent.cli.main import main
from edge_agent.demo.bench import demo_slips, sample_window_days
from edge_agent.demo.slipgen import generate_slip
from edge_agent.pipelines.bench.fields import load_template
from edge_agent.pipelines.bench.privacy import mask_text
from edge_agent.pipelines.bench.rules_config import FieldsConfig
from tests.bombs import bomb_png

DATA = Path(__file__).parents[1] / "data" / "bench_rules"
BARCODES = Path(__file__).parents[1] / "data" / "barcodes"
FIELDS = ("order_no", "sku", "quantity", "reason", "customer_id", "return_date")


@pytest.fixture(scope="module")
def slips(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, dict[str, Any]]]:
    folder = tmp_path_factory.mktemp("slips")
    out = []
    for seed in (1, 3):
        img, truth = generate_slip(seed, "clean")
        path = folder / f"slip{seed}.jpg"
        cv2.imwrite(str(path), img)
        out.append((path, truth))
    return out


def run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, Any]], str]:
    rc = main(["ocr", "--json", *args])
    cap = capsys.readouterr()
    return rc, [json.loads(line) for line in cap.out.splitlines()], cap.err


def test_cli_ocr__generated_slips_and_a_broken_file(
    slips: list[tuple[Path, dict[str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    images = [str(slips[0][0]), str(broken), str(slips[1][0])]
    rc, lines, err = run_json(images, capsys)
    assert rc == 1  # one image failed; the others still ran
    assert [line["image"] for line in lines] == images
    assert "broken.jpg: not a readable image" in err and "error" in lines[1]
    for line, (_, truth) in zip((lines[0], lines[2]), slips, strict=True):
        assert {
            "image",
            "fields",
            "confidence",
            "barcodes",
            "needs_review",
            "review_reasons",
            "retake",
            "timing_ms",
        } <= set(line)
        fields, conf = line["fields"], line["confidence"]
        assert isinstance(fields, dict) and isinstance(conf, dict) and set(fields) == set(FIELDS)
        expected = {
            "order_no": truth["order_no"],
            "sku": truth["sku"],
            "quantity": truth["quantity"],
            "reason": truth["reason_category"],
            "customer_id": truth["customer_id"],
            "return_date": truth["return_date"],
        }
        # the printed barcode carries the order number
        assert any(b["text"] == truth["order_no"] for b in line["barcodes"])
        assert fields["order_no"] == truth["order_no"]
        # the target: a field that passes without review is right
        for name in FIELDS:
            if fields[name] is not None and fields[name] != expected[name]:
                codes = {r["field"] for r in line["review_reasons"]}
                assert line["needs_review"] and name in codes, (name, fields[name], expected[name])
        # generated dates are in the past beyond the 30-day window: the format rules must say so
        assert line["needs_review"]
        assert "date_outside_window" in {r["code"] for r in line["review_reasons"]}
        assert {"quality", "total", "fields", "validate", "decide"} <= set(line["timing_ms"])
        assert str(truth["phone"]) not in json.dumps(line)


def test_cli_ocr__real_label_photo_reads_the_barcode_and_invents_no_fields(capsys: pytest.CaptureFixture[str]) -> None:
    expected = (DATA / "code128-2_01.txt").read_text(encoding="utf-8").strip()
    rc, [line], _ = run_json([str(DATA / "code128-2_01.png")], capsys)
    assert rc == 0
    assert line["needs_review"] is True
    codes = {(r["code"], r["field"]) for r in line["review_reasons"]}
    if line["barcodes"]:
        assert expected in [b["text"] for b in line["barcodes"]]
    assert ("missing_field", "sku") in codes or ("image_quality", None) in codes
    assert all(v is None for k, v in line["fields"].items() if k != "order_no")


def test_cli_ocr__text_output_config_and_missing_file(
    slips: list[tuple[Path, dict[str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        'profile = "bench"\n[device]\nid = "b1"\nsite = "s1"\n'
        '[bench.validation]\nreturn_window_days = 3650\nmanifest = "m.csv"\n',
        encoding="utf-8",
    )
    path, truth = slips[0]
    (tmp_path / "m.csv").write_text(f"order_no,sku,quantity\n{truth['order_no']},{truth['sku']},1\n", encoding="utf-8")
    rc = main(["ocr", "--config", str(cfg), "--scan", str(truth["order_no"]), str(path), str(tmp_path / "missing.png")])
    cap = capsys.readouterr()
    assert rc == 1 and "missing.png: image file not found" in cap.err
    assert f"order_no     {truth['order_no']}" in cap.out
    if int(truth["quantity"]) > 1:
        assert "quantity: " in cap.out and "ordered" in cap.out


def test_cli_ocr__bad_manifest_in_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        'profile = "bench"\n[device]\nid = "b1"\nsite = "s1"\n[bench.validation]\nmanifest = "m.csv"\n',
        encoding="utf-8",
    )
    (tmp_path / "m.csv").write_text("order_no,sku\n1,2\n", encoding="utf-8")
    assert main(["ocr", "--config", str(cfg), "x.png"]) == 2
    assert "m.csv: header: expected columns order_no, sku, quantity" in capsys.readouterr().err


def test_cli_ocr__a_manifest_with_many_bad_rows_says_how_many(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        'profile = "bench"\n[device]\nid = "b1"\nsite = "s1"\n[bench.validation]\nmanifest = "m.csv"\n',
        encoding="utf-8",
    )
    rows = "".join(f"{n},A1,none\n" for n in range(30))
    (tmp_path / "m.csv").write_text("order_no,sku,quantity\n" + rows, encoding="utf-8")
    assert main(["ocr", "--config", str(cfg), "x.png"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "m.csv: line 2: quantity: expected an integer >= 1, got 'none'".replace(
        "m.csv", str(tmp_path / "m.csv")
    )
    assert err[-1] == "(and 10 more bad rows)" and len(err) == 21


def test_cli_ocr__hostile_files_refused_before_reading_or_decoding(
    slips: list[tuple[Path, dict[str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # opened for reading, a FIFO with no writer blocks forever
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as f:
        f.truncate(3 * 1024**3)  # sparse: 3 GB long, nothing on disk
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(12000, 12000))  # 110 KB that decode to 432 MB
    folder = tmp_path / "folder.png"
    folder.mkdir()
    images = [str(fifo), str(huge), str(bomb), str(folder), str(slips[0][0])]
    rc, lines, err = run_json(images, capsys)
    assert rc == 1 and [line["image"] for line in lines] == images
    assert "pipe.jpg: not a regular file (a FIFO)" in err
    assert "huge.jpg: 3072 MB (expected an image of at most 64 MB)" in err
    assert "bomb.png: image too large: its header declares 12000x12000 px" in err
    assert "folder.png: not a regular file (a directory)" in err
    assert "error" not in lines[4] and lines[4]["fields"]["order_no"] == slips[0][1]["order_no"]


def test_cli_ocr__shipped_samples_pass_whatever_today_is(capsys: pytest.CaptureFixture[str]) -> None:
    # Their printed dates are fixed and age; a newcomer's first `ocr --samples` must still say ok.
    folder, truth = demo_slips()
    rc, lines, err = run_json(["--samples"], capsys)
    assert rc == 0 and f"sample slips: {folder}" in err
    assert sorted(Path(line["image"]).name for line in lines) == sorted(truth)
    for line in lines:
        t = truth[Path(line["image"]).name]
        if t["defect"] is not None:
            assert line["needs_review"]  # the blurred one is there to show a retake
            continue
        assert not line["needs_review"], line["review_reasons"]
        assert line["fields"]["return_date"] == t["return_date"]
        assert line["fields"]["order_no"] == t["order_no"] and line["fields"]["sku"] == t["sku"]


def test_demo__return_window_reaches_the_oldest_sample_slip() -> None:
    _, truth = demo_slips()
    oldest = min(date.fromisoformat(t["return_date"]) for t in truth.values())
    assert sample_window_days(truth, oldest + timedelta(days=400)) == 430
    assert sample_window_days(truth, oldest) == 30


def test_cli_ocr__no_image_and_no_samples_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ocr"]) == 1
    assert "expected one or more IMAGE files, or --samples" in capsys.readouterr().err


def test_cli_ocr__every_barcode_zxing_reads_alone_comes_out(capsys: pytest.CaptureFixture[str]) -> None:
    # Real camera photos (zxing's public test images). What zxing-cpp reads alone on the full photo with
    # its defaults, the pipeline must not lose on the way: it reads the photo as taken, the crop only adds.
    photos = sorted(BARCODES.glob("*.png"))
    assert len(photos) >= 30
    expected = {p.name: p.with_suffix(".txt").read_text(encoding="utf-8").rstrip("\n") for p in photos}
    alone = {p.name for p in photos if expected[p.name] in [r.text for r in zxingcpp.read_barcodes(cv2.imread(str(p)))]}
    assert len(alone) >= 30  # the set is mostly readable: a broken zxing install would not pass silently
    rc, lines, _ = run_json([str(p) for p in photos], capsys)
    assert rc == 0 and len(lines) == len(photos)
    # what leaves the device is masked (a MECARD QR holds a name, a phone and an e-mail): compare masked
    labels = load_template(FieldsConfig()).privacy_labels
    out = {Path(line["image"]).name: [b["text"] for b in line["barcodes"]] for line in lines}
    missed = [name for name in sorted(alone) if mask_text(expected[name], labels=labels) not in out[name]]
    assert missed == []
    assert "srowen" not in str(out) and "Sean Owen" not in str(out)


def test_cli_ocr__a_debug_dir_that_is_a_file_is_named_not_the_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "debug"
    afile.write_text("")
    assert main(["ocr", "--debug-dir", str(afile), str(tmp_path / "slip.jpg")]) == 1
    assert f"ocr: --debug-dir {afile}: expected a folder it can write, got a file" in capsys.readouterr().err
