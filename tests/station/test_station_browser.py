"""The station in a real browser: headless Chromium (Selenium) against the bench daemon, twins and a real mosquitto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.spine.records import check_record
from edge_agent.spine.verify import FAIL
from edge_agent.station.operators import add_operator
from tests.broker import Broker, Subscriber
from tests.helpers import export_records, verify_records
from tests.station.harness import DEVICE, SITE, BenchRig, chromium_paths, start_chromium

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_paths() is None, reason="needs chromium and chromium-driver (.ci/apt-packages.txt)"),
]
WAIT_S = 60  # the first slip also waits for the OCR models to load on a busy CI machine
OPERATOR, PIN = "han.mei", "4821"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    driver = start_chromium(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def rig(broker: Broker, tmp_path: Path) -> Iterator[BenchRig]:
    operators = tmp_path / "operators.toml"
    add_operator(operators, OPERATOR, "supervisor", PIN, None)
    r = BenchRig(tmp_path / "bench", broker.url, station={"operators_file": operators})
    LOG_TAIL.append(r)
    try:
        yield r.start()
    finally:
        LOG_TAIL.remove(r)
        rc = r.stop()
        assert rc == 0, "the daemon must stop cleanly:\n" + r.log()


LOG_TAIL: list[BenchRig] = []  # the running rig, so a failed wait can show what the daemon said


def _wait(driver: Any, what: str, cond: Any, timeout_s: float = WAIT_S) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(cond)
    except Exception as exc:
        page = driver.execute_script("return document.body && document.body.innerText") or ""
        log = LOG_TAIL[-1].log() if LOG_TAIL else ""
        raise AssertionError(
            f"browser: {what} did not happen within {timeout_s} s\n--- page ---\n{page[:1500]}\n--- agent log ---\n{log}"
        ) from exc


def _text(driver: Any, css: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def _keys(driver: Any, *keys: str) -> None:
    """Typing at whatever has the focus, as a person at a keyboard would; no clicks."""
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


def _active_id(driver: Any) -> str:
    return str(driver.execute_script("return document.activeElement && document.activeElement.id"))


def _sign_in(d: Any, rig: BenchRig) -> None:
    """Sign in with the keyboard alone (id, Tab, PIN, Enter) and wait for the live page's stream."""
    from selenium.webdriver.common.keys import Keys

    d.get(rig.url)
    _wait(d, "the sign-in page", lambda d: _active_id(d) == "who")
    _keys(d, OPERATOR, Keys.TAB, PIN, Keys.ENTER)
    _wait(d, "the live page after sign-in", lambda d: d.execute_script("return document.body.dataset.connected"))


def test_station_browser__a_sign_in_form_that_outlived_its_session_asks_again(rig: BenchRig, browser: Any) -> None:
    from selenium.webdriver.common.keys import Keys

    d = browser
    d.get(rig.url)
    _wait(d, "the sign-in page", lambda d: _active_id(d) == "who")
    d.delete_all_cookies()  # what a restart of the daemon, or a form left open past session_idle_min, leaves
    _keys(d, OPERATOR, Keys.TAB, PIN, Keys.ENTER)
    _wait(d, "the sign-in form again, saying why", lambda d: "expired" in _text(d, "#signin-error"))
    assert _active_id(d) == "who"
    _keys(d, OPERATOR, Keys.TAB, PIN, Keys.ENTER)
    _wait(d, "the live page after sign-in", lambda d: d.execute_script("return document.body.dataset.connected"))


def test_station_browser__verdict_queue_keyboard_correction_scan_and_signed_record(
    rig: BenchRig, broker: Broker, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.keys import Keys

    d = browser
    with Subscriber(broker, f"edge/{SITE}/{DEVICE}/rec/return_inspection", client_id="central-test") as central:
        _sign_in(d, rig)
        assert OPERATOR in _text(d, "#operator")

        # 1. A slip drops in: the page shows its verdict, pushed, with the values read.
        clean = rig.slip("slip_clean_501.jpg")
        rig.present("slip_clean_501.jpg")
        _wait(d, "the passed verdict", lambda d: _text(d, "#verdict-badge") == "Passed")
        order_cell = _text(d, '#verdict-fields tr[data-field="order_no"] td.value')
        assert order_cell == clean["order_no"]
        assert "agree" in _text(d, "#verdict-order")
        _wait(d, "today's counts", lambda d: _text(d, "#count-passed").startswith("1"))
        assert d.save_screenshot(str(tmp_path / "live.png"))

        # 2. A doubtful slip: the RF scan disagrees with the slip, so it waits in the queue.
        doubtful = rig.slip("slip_clean_502.jpg")
        rig.present("slip_clean_502.jpg", scan="100000000001")
        _wait(d, "the review verdict", lambda d: _text(d, "#verdict-badge") == "Review")
        _wait(d, "the queued item", lambda d: _text(d, "#queue-count") == "1")
        assert "disagree" in _text(d, "#queue tbody tr").lower()

        # 3. Keyboard only: Enter opens the oldest item with the doubtful field focused.
        _keys(d, Keys.ENTER)
        _wait(d, "the review page with the order number focused", lambda d: _active_id(d) == "f-order_no")
        _wait(
            d,
            "the photo of the item",
            lambda d: d.execute_script("return document.querySelector('#photo-img')?.naturalWidth > 0"),
        )
        # The RF scanner's read lands in the focused field, not in the bench's pairing.
        _wait(
            d,
            "the scanner handed to the page",
            lambda d: d.execute_script("return document.body.dataset.scannerArmed") == "1",
        )
        rig.scanner.scan(doubtful["order_no"])
        # The slip's barcode already gave this value, so wait for the scan itself, not for the value.
        scanned = "const a = document.activeElement; return a.id === 'f-order_no' && a.classList.contains('scanned') && a.value"
        _wait(d, "the scan in the focused field", lambda d: d.execute_script(scanned) == doubtful["order_no"])
        # Then the quantity, by its key: Esc leaves the field, 3 jumps to quantity, type, Enter saves.
        new_qty = str(int(doubtful["quantity"]) + 1)
        _keys(d, Keys.ESCAPE, "3")
        _wait(d, "the quantity field focused", lambda d: _active_id(d) == "f-quantity")
        _keys(d, new_qty, Keys.ENTER)
        _wait(
            d,
            "back on the live page after the decision",
            lambda d: d.execute_script("return document.body.dataset.page") == "live",
        )
        _wait(d, "the empty queue", lambda d: _text(d, "#queue-count") == "0")

        # 4. The daemon emitted the reviewed record; central got it over MQTT, signed and chained.
        def reviewed() -> list[dict[str, Any]]:
            return [r for r in (json.loads(m.payload) for m in central.messages()) if r["body"]["human_reviewed"]]

        central.wait_for(2, timeout_s=WAIT_S)
        _wait(d, "the reviewed record on the broker", lambda _d: reviewed())
        _wait(d, "the reviewed verdict on the page", lambda d: _text(d, "#verdict-badge") == "Reviewed")
        assert d.save_screenshot(str(tmp_path / "reviewed.png"))
    [rec] = reviewed()
    body = rec["body"]
    assert body["reviewer"] == OPERATOR and body["decision"] == "corrected"
    assert body["changes"]["quantity"] == {"from": int(doubtful["quantity"]), "to": int(new_qty)}
    assert body["fields"]["order_no"] == doubtful["order_no"] and body["fields"]["quantity"] == int(new_qty)
    assert body["why"] == "misread by OCR"
    assert check_record(rec, rig.pub_key()) == []
    rig.stop()
    stored = export_records(rig.db_path)
    assert rec in stored, "the record central got is the one the chain holds"
    assert [f for f in verify_records(stored, [rig.pub_key()]).findings if f.level == FAIL] == []
    for png in ("live.png", "reviewed.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _box(d: Any, field: str = "sku") -> dict[str, float]:
    """Where a field's box is drawn on the screen (after the photo's zoom), and the photo panel's middle."""
    return dict(
        d.execute_script(
            "const r = document.querySelector(`#overlay polygon[data-field='${arguments[0]}']`).getBoundingClientRect();"
            "const p = document.querySelector('#review-photo').getBoundingClientRect();"
            "return {width: r.width, cx: r.x + r.width / 2, cy: r.y + r.height / 2,"
            " px: p.x + p.width / 2, py: p.y + p.height / 2, pw: p.width};",
            field,
        )
    )


def _zoomed_on(d: Any, fit: dict[str, float]) -> bool:
    b = _box(d)
    return (
        b["width"] >= 2 * fit["width"]
        and abs(b["cx"] - b["px"]) < 0.05 * b["pw"]
        and abs(b["cy"] - b["py"]) < 0.05 * b["pw"]
    )


def test_station_browser__a_character_read_two_ways_is_switched_with_one_click(
    rig: BenchRig, broker: Broker, browser: Any
) -> None:
    """A generated slip (tuning seed 600, clean) whose SKU mixes letters and digits, printed in a font whose
    O and 0 (and I and 1) the reader cannot tell apart: it goes to review, and the page offers each doubtful
    character as a switch. One click puts the other reading in the field; saving records that correction."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from edge_agent.demo.slipgen import encode_png, field_truth, generate_slip

    img, meta = generate_slip(600, "clean", style="diverse")
    truth = field_truth(meta)
    d = browser
    with Subscriber(broker, f"edge/{SITE}/{DEVICE}/rec/return_inspection", client_id="central-test") as central:
        _sign_in(d, rig)
        rig.scanner.scan(truth["order_no"])
        rig.camera.drop_bytes(encode_png(img), ext=".png")
        _wait(d, "the queued item", lambda d: _text(d, "#queue-count") == "1")
        # The live verdict marks the characters in doubt.
        marks = '#verdict-fields tr[data-field="sku"] td.value mark'
        _wait(d, "the SKU's doubtful characters marked", lambda d: d.find_elements(By.CSS_SELECTOR, marks))
        live_sku = _text(d, '#verdict-fields tr[data-field="sku"] td.value')
        live_marks = [m.text for m in d.find_elements(By.CSS_SELECTOR, marks)]
        _keys(d, Keys.ENTER)
        _wait(d, "the review page", lambda d: d.execute_script("return document.body.dataset.page") == "review")

        sku = d.find_element(By.ID, "f-sku")
        read = sku.get_attribute("value")
        flips = d.find_elements(By.CSS_SELECTOR, "#d-sku .flip")
        assert flips, "the SKU's doubtful characters are switches:\n" + _text(d, ".reasons")
        reasons = _text(d, ".reasons")
        strip = "".join(c.text for c in d.find_elements(By.CSS_SELECTOR, "#d-sku > *"))
        assert strip == read == live_sku, "the strip shows the value as read, one cell per character"
        assert live_marks == [b.text for b in flips], "the live page marked the same characters"
        for b in flips:
            at, pair = int(b.get_attribute("data-at")), b.get_attribute("data-pair")
            assert b.text == read[at] == pair[0] and f"{pair[0]} or {pair[1]} at character {at + 1}" in reasons

        _wait(
            d,
            "the photo with the SKU's box",
            lambda d: (
                d.execute_script("return document.querySelector('#photo-img').naturalWidth > 0")
                and d.find_elements(By.CSS_SELECTOR, '#overlay polygon[data-field="sku"]')
            ),
        )
        fit = _box(d)

        first = flips[0]
        at, other = int(first.get_attribute("data-at")), first.get_attribute("data-pair")[1]
        switched = read[:at] + other + read[at + 1 :]
        first.click()
        _wait(d, "the other reading in the field", lambda _d: sku.get_attribute("value") == switched)
        assert first.text == other and "flipped" in first.get_attribute("class")
        assert "edited" in d.find_element(By.CSS_SELECTOR, 'label.field[data-field="sku"]').get_attribute("class")
        # ... and the photo zooms onto the SKU's box, in the middle of the panel, to check the glyph there.
        _wait(d, "the photo zoomed onto the SKU", lambda d: _zoomed_on(d, fit))
        first.click()  # and back: the field is as read again, not edited
        _wait(d, "the reading as it was", lambda _d: sku.get_attribute("value") == read)
        assert "edited" not in d.find_element(By.CSS_SELECTOR, 'label.field[data-field="sku"]').get_attribute("class")
        # Z (no field being typed in) goes back to the whole photo, and again onto the field.
        _keys(d, "z")
        _wait(d, "the whole photo again", lambda d: abs(_box(d)["width"] - fit["width"]) < 2)
        _keys(d, "z")
        _wait(d, "the photo zoomed onto the SKU again", lambda d: _zoomed_on(d, fit))
        # Keyboard: Enter on the focused switch switches it, and does not save the form.
        first.send_keys(Keys.ENTER)
        _wait(d, "the other reading again, by Enter", lambda _d: sku.get_attribute("value") == switched)
        assert d.execute_script("return document.body.dataset.page") == "review" and not d.execute_script(
            "return document.body.dataset.decided"
        )
        # A typed change of length hides the strip, which no longer lines up with the value.
        sku.send_keys(Keys.END, "X")
        _wait(d, "the strip hidden", lambda d: d.execute_script("return document.querySelector('#d-sku').hidden"))
        sku.send_keys(Keys.BACKSPACE)
        _wait(d, "the strip back", lambda d: not d.execute_script("return document.querySelector('#d-sku').hidden"))
        sku.send_keys(Keys.ENTER)  # save
        _wait(d, "back on the live page", lambda d: d.execute_script("return document.body.dataset.page") == "live")

        def reviewed() -> list[dict[str, Any]]:
            return [r for r in (json.loads(m.payload) for m in central.messages()) if r["body"]["human_reviewed"]]

        _wait(d, "the reviewed record on the broker", lambda _d: reviewed())
    [rec] = reviewed()
    body = rec["body"]
    assert body["decision"] == "corrected" and body["fields"]["sku"] == switched
    assert body["changes"]["sku"] == {"from": read, "to": switched} and body["why"] == "misread by OCR"
    assert check_record(rec, rig.pub_key()) == []
