"""Regenerate the operator station's screenshots in docs/img/ from a real run (daemon, twins, mosquitto, Chromium).

    .venv/bin/python docs/screenshots.py            # writes docs/img/station-*.png

Needs mosquitto, chromium and chromium-driver (.ci/apt-packages.txt). Every picture is taken from
the page as an operator sees it: the shipped demo slips go through the real OCR, the review is
done with the keyboard and the scanner twin, the red strip comes from unplugging the scanner.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.demo.slipgen import encode_png, field_truth, generate_slip  # noqa: E402
from edge_agent.station.operators import add_operator  # noqa: E402
from tests.broker import Broker  # noqa: E402
from tests.station.harness import BenchRig, start_chromium  # noqa: E402

OUT = ROOT / "docs" / "img"
WAIT_S = 90


def _until(driver: Any, js: str, what: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S, 0.05).until(lambda d: d.execute_script(js), f"{what} did not happen")


def _shot(driver: Any, name: str) -> None:
    path = OUT / f"station-{name}.png"
    driver.save_screenshot(str(path))
    print(f"wrote {path.relative_to(ROOT)}")


def main() -> int:  # noqa: PLR0915 - one walk through the pages, in order
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="station-shots-") as tmp:
        work = Path(tmp)
        broker = Broker(work / "broker").start()
        ops = work / "operators.toml"
        add_operator(ops, "han.mei", "supervisor", "4821", None)
        rig = BenchRig(work / "bench", broker.url, station={"operators_file": ops})
        driver = None
        try:
            rig.start()
            driver = start_chromium(work / "chromium")
            keys = ActionChains(driver)
            driver.get(rig.url)
            _until(driver, "return document.activeElement && document.activeElement.id === 'who'", "sign-in page")
            _shot(driver, "signin")
            keys.send_keys("han.mei", Keys.TAB, "4821", Keys.ENTER).perform()
            _until(driver, "return document.body.dataset.connected === '1'", "live page")
            for name in ("slip_clean_501.jpg", "slip_typical_503.jpg"):
                seen = driver.execute_script("return document.querySelectorAll('#recent tbody tr').length")
                rig.present(name)
                _until(driver, f"return document.querySelectorAll('#recent tbody tr').length > {seen}", name)
            _until(driver, "return document.body.dataset.verdictKind === 'passed'", "a passed verdict")
            _shot(driver, "live-passed")
            rig.present("slip_clean_502.jpg", scan="100000000001")  # the RF scan disagrees with the slip
            _until(driver, "return document.body.dataset.verdictKind === 'review'", "a review verdict")
            _until(
                driver, "const i = document.querySelector('#live-photo img'); return i && i.naturalWidth > 0", "photo"
            )
            rig.present("slip_typical_506_blur.jpg")
            _until(driver, "return document.body.dataset.verdictKind === 'retake'", "a retake verdict")
            _shot(driver, "live-retake")
            ActionChains(driver).send_keys(Keys.ENTER).perform()
            _until(driver, "return document.activeElement && document.activeElement.id === 'f-order_no'", "review page")
            _until(driver, "const i = document.querySelector('#photo-img'); return i && i.naturalWidth > 0", "photo")
            _until(driver, "return document.body.dataset.scannerArmed === '1'", "the scanner handed to the page")
            rig.scanner.scan(rig.slip("slip_clean_502.jpg")["order_no"])
            _until(driver, "return document.activeElement.classList.contains('scanned')", "the scan in the field")
            new_qty = str(int(rig.slip("slip_clean_502.jpg")["quantity"]) + 1)
            ActionChains(driver).send_keys(Keys.ESCAPE, "3", new_qty).perform()
            _until(driver, "return document.querySelector('.field.edited') !== null", "the edited quantity")
            _shot(driver, "review")
            ActionChains(driver).send_keys(Keys.ENTER).perform()
            _until(
                driver, "const r = document.querySelector('.review'); return r && r.dataset.item === '2'", "next item"
            )
            _until(driver, "return document.activeElement && document.activeElement.tagName === 'INPUT'", "its focus")
            ActionChains(driver).send_keys(Keys.ESCAPE, "x").perform()
            _until(driver, "return !document.querySelector('#reject-box').hidden", "the reject box")
            ActionChains(driver).send_keys(Keys.ENTER).perform()
            _until(driver, "return document.body.dataset.page === 'live'", "back on the live page")
            _until(driver, "return document.body.dataset.verdictKind === 'rejected'", "the rejected record")
            driver.get(rig.url + "history")
            _shot(driver, "history")
            driver.get(rig.url)
            _until(driver, "return document.body.dataset.connected === '1'", "live page")
            # A generated slip (tuning seed 691) whose SKU PN-2123-WHT-O1 the reader reads ...-01, in doubt:
            # the switch puts the O back.
            img, meta = generate_slip(691, "clean", style="diverse")
            truth = field_truth(meta)
            rig.scanner.scan(truth["order_no"])
            rig.camera.drop_bytes(encode_png(img), ext=".png")
            _until(driver, "return document.querySelector('#queue-count').textContent === '1'", "the queued slip")
            ActionChains(driver).send_keys(Keys.ENTER).perform()
            _until(driver, "const i = document.querySelector('#photo-img'); return i && i.naturalWidth > 0", "photo")
            _until(driver, "return document.querySelector('#d-sku .flip') !== null", "the SKU's switches")
            driver.execute_script(
                "const sku = arguments[0];"
                "for (const b of document.querySelectorAll('#d-sku .flip'))"
                "  if (b.textContent !== sku[b.dataset.at]) b.click();",
                truth["sku"],
            )
            _until(driver, "return document.querySelector('.field.edited') !== null", "the switched character")
            _until(driver, "return getComputedStyle(document.querySelector('#zoom')).transform !== 'none'", "zoom")
            _shot(driver, "review-switch")
            driver.get(rig.url)
            _until(driver, "return document.body.dataset.connected === '1'", "live page")
            rig.scanner.stop()  # unplugged
            _until(
                driver, "const p = document.querySelector('.pill.bad'); return p && p.dataset.name === 'Scanner'", "red"
            )
            _shot(driver, "strip-scanner-unplugged")
        finally:
            if driver is not None:
                driver.quit()
            rig.stop()
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
