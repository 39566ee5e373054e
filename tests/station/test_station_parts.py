"""The station's parts on their own: [bench.station] config errors, the operators file, verdict views, counts, strip."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import ConfigError
from edge_agent.settings import load_config, parse_config
from edge_agent.station.feed import Counts, Levels, verdict_view
from edge_agent.station.operators import add_operator, authenticate, check_secret, hash_secret, load_operators
from edge_agent.station.strip import build_strip

LAN = "0.0.0.0"  # noqa: S104 - a station reachable from the network
LEVELS = Levels({"quantity": 0.9}, doubt=0.6)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cfg(station: dict[str, Any]) -> Any:
    return parse_config(
        {"profile": "bench", "device": {"id": "b1", "site": "s"}, "bench": {"station": station}}, "bench.toml"
    )


def test_station_config__defaults_are_loopback_without_sign_in() -> None:
    st = _cfg({}).bench.station
    assert st.listen == "127.0.0.1" and not st.sign_in_required and st.url == "http://127.0.0.1:8480/"
    assert st.enabled_for("bench") and not st.enabled_for("truck") and not st.enabled_for("sensors")
    on = _cfg({"enabled": True}).bench.station
    assert on.enabled_for("truck") and not _cfg({"enabled": False}).bench.station.enabled_for("bench")


def test_station_config__lan_listen_needs_an_operators_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        _cfg({"listen": LAN})
    [msg] = exc.value.problems
    assert msg.startswith("bench.toml: bench.station.operators_file: expected an operators file")
    assert "0.0.0.0 is reachable from the network" in msg
    st = _cfg({"listen": LAN, "operators_file": str(tmp_path / "ops.toml")}).bench.station
    assert st.sign_in_required and st.url == "http://127.0.0.1:8480/"
    assert _cfg({"listen": "::1"}).bench.station.url == "http://[::1]:8480/"


def test_station_config__errors_name_the_key_and_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        _cfg({"tls_cert": "c.pem", "port": 70000, "colour": "red", "correction_reasons": []})
    text = "\n".join(exc.value.problems)
    assert "bench.station.tls_key: expected tls_cert and tls_key together" in text
    assert "bench.station.port: expected a TCP port 1-65535, got 70000" in text
    assert "bench.station.colour: unknown key" in text
    assert "bench.station.correction_reasons" in text
    cfg = tmp_path / "c.toml"
    cfg.write_text('profile = "bench"\n[device]\nid = "b"\nsite = "s"\n[bench.station]\nport = "web"\n')
    with pytest.raises(ConfigError, match=r"c.toml: bench.station.port: expected a TCP port 1-65535, got \"web\""):
        load_config(cfg)


def test_operators__pins_and_badges_are_hashed_and_checked(tmp_path: Path) -> None:
    ops = tmp_path / "operators.toml"
    add_operator(ops, "han.mei", "supervisor", "482193", "BADGE-0042")
    add_operator(ops, "li.lei", "operator", "1234", None)
    add_operator(ops, "li.lei", "operator", "5678", None)  # replaced, not duplicated
    assert ops.stat().st_mode & 0o777 == 0o600
    text = ops.read_text()
    assert "482193" not in text and "BADGE-0042" not in text and text.count("scrypt$") == 3
    found = load_operators(ops)
    assert sorted(found) == ["han.mei", "li.lei"] and found["han.mei"].role == "supervisor"
    assert authenticate(found, "han.mei", "482193") is found["han.mei"]
    assert authenticate(found, "BADGE-0042", "") is found["han.mei"], "a badge scan alone signs in"
    assert authenticate(found, "li.lei", "1234") is None and authenticate(found, "li.lei", "5678") is not None
    assert authenticate(found, "nobody", "1234") is None and authenticate(found, "", "") is None
    stored = hash_secret("0000", n=2**10)
    assert check_secret("0000", stored) and not check_secret("0001", stored)
    assert not check_secret("0000", "scrypt$x$y") and not check_secret("0000", "md5$1$1$1$aa$bb")


def test_operators__file_errors_say_where_and_what(tmp_path: Path) -> None:
    ops = tmp_path / "operators.toml"
    ops.write_text(
        '[[operator]]\nid = "a b"\npin = "1234"\n[[operator]]\nid = "x"\nrole = "boss"\n'
        '[[operator]]\nid = "y"\npin = "1234"\n[[operator]]\nid = "z"\n'
    )
    with pytest.raises(ConfigError) as exc:
        load_operators(ops)
    text = "\n".join(exc.value.problems)
    assert f"{ops}: operator[0].id: expected 1-64 letters" in text
    assert f"{ops}: operator[1].role: expected one of operator, supervisor, got 'boss'" in text
    assert f"{ops}: operator[2].pin: expected a scrypt hash" in text and "never put a PIN in clear" in text
    assert f"{ops}: operator[3]: expected a pin or a badge hash" in text
    ops.write_text("[[operator]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_operators(ops)
    with pytest.raises(ConfigError, match="cannot read the operators file"):
        load_operators(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="PIN: expected 4 to 12 digits"):
        add_operator(tmp_path / "new.toml", "ok", "operator", "12ab", None)
    assert not os.path.exists(tmp_path / "new.toml")


def _body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "fields": {
            "order_no": "A1",
            "sku": "S",
            "quantity": 2,
            "reason": "破损",
            "customer_id": None,
            "return_date": "2025-01-02",
        },
        "confidence": {
            "order_no": 0.99,
            "sku": 0.7,
            "quantity": 0.5,
            "reason": 0.95,
            "customer_id": 0.0,
            "return_date": 0.9,
        },
        "order_check": {"scan": "A1", "barcode": "A1", "ocr": "A1", "agree": True},
        "quality": {"ok": True, "reasons": []},
        "review_reasons": [],
        "timing_ms": {"total": 310.4},
        "human_reviewed": False,
    }
    body.update(over)
    return body


def test_verdict_view__kinds_levels_and_plain_reasons() -> None:
    v = verdict_view(_body(), LEVELS)
    assert v["kind"] == "passed" and v["agree"] is True and v["read_ms"] == 310.4
    levels = {f["name"]: f["level"] for f in v["fields"]}
    assert levels == {
        "order_no": "high",
        "sku": "mid",
        "quantity": "low",
        "reason": "high",
        "customer_id": "missing",
        "return_date": "high",
    }
    issue = {"code": "low_confidence", "field": "quantity", "message": "low confidence on quantity (0.50 < 0.90)"}
    v = verdict_view(_body(review_reasons=[issue]), LEVELS)
    assert v["kind"] == "review" and v["reasons"] == ["Quantity: not sure of the reading (0.50 < 0.90)"]
    assert [f["name"] for f in v["fields"] if f["doubtful"]] == ["quantity"]
    glare = {"ok": False, "reasons": ["glare over 12% of the label: tilt the slip or the lamp"]}
    v = verdict_view(
        _body(quality=glare, review_reasons=[{"code": "image_quality", "field": None, "message": "x"}]), LEVELS
    )
    assert v["kind"] == "retake" and v["retake"] == glare["reasons"] and v["reasons"] == [], (
        "a body from before `retake`"
    )
    cause = "glare over 12% of the label: tilt the slip or the lamp"
    missing = [{"code": "missing_field", "field": f, "message": f"{f}: not found"} for f in ("sku", "quantity")]
    mismatch = {"code": "order_mismatch", "field": "order_no", "message": "order_no differs between sources"}
    v = verdict_view(
        _body(
            retake=[{"field": "sku", "cause": cause}, {"field": "quantity", "cause": cause}],
            review_reasons=[*missing, mismatch],
        ),
        LEVELS,
    )
    assert v["kind"] == "retake" and v["retake"] == [f"{cause} (SKU, Quantity)"]
    assert v["reasons"] == ["Order: scan, barcode and slip disagree"]
    assert {f["name"] for f in v["fields"] if f["doubtful"]} == {"sku", "quantity", "order_no"}
    faint = [{"field": "sku", "cause": "nothing wrong with the photo was measured: the print may be faint"}]
    v = verdict_view(_body(retake=faint, review_reasons=missing[:1]), LEVELS)
    assert v["kind"] == "review" and v["retake"] == [] and v["reasons"] == ["SKU: not found on the slip"]
    blank = [{"field": None, "cause": "no slip in the photo: put the slip under the camera"}]
    assert verdict_view(_body(retake=blank), LEVELS)["retake"] == [blank[0]["cause"]]
    v = verdict_view(_body(human_reviewed=True, decision="corrected", reviewer="li.lei"), LEVELS)
    assert v["kind"] == "reviewed" and {f["level"] for f in v["fields"]} == {"high", "missing"}
    assert verdict_view(_body(human_reviewed=True, decision="rejected"), LEVELS)["kind"] == "rejected"


def test_counts__today_only_and_a_new_day_starts_from_zero() -> None:
    c = Counts()
    now = datetime.now(UTC)
    ts = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    yesterday = (now - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    c.add(verdict_view(_body(), LEVELS), ts)
    c.add(verdict_view(_body(timing_ms={"total": 500.0}), LEVELS), ts)
    c.add(verdict_view(_body(quality={"ok": False, "reasons": ["blurry"]}), LEVELS), ts)
    c.add(verdict_view(_body(human_reviewed=True, decision="accepted"), LEVELS), ts)
    c.add(verdict_view(_body(), LEVELS), yesterday)
    c.add(verdict_view(_body(), LEVELS), "not a time")
    got = c.to_json()
    assert (got["inspected"], got["passed"], got["reviewed"], got["retakes"]) == (3, 2, 1, 1)
    assert got["median_read_ms"] == 310
    c.add(verdict_view(_body(), LEVELS), (now + timedelta(days=1)).isoformat().replace("+00:00", "Z"))
    assert c.to_json()["inspected"] == 1 and c.to_json()["day"] == (now + timedelta(days=1)).date().isoformat()


def test_strip__red_with_the_remedy_when_a_device_or_the_broker_is_gone() -> None:
    status = {
        "broker": {"connected": False, "error": "connection refused"},
        "pipeline": {
            "camera": {"connected": True, "last_error": None},
            "scanner": {"connected": False, "last_error": "/dev/ttyACM0: no such device"},
        },
    }
    strip = build_strip("bench", "b1", status, 12)
    items = {i["name"]: i for i in strip["items"]}
    assert strip["state"] == "bad"
    assert items["Broker"]["state"] == "bad" and "mqtt.url" in items["Broker"]["remedy"]
    assert items["Scanner"]["state"] == "bad" and items["Scanner"]["text"] == "not connected"
    assert items["Scanner"]["detail"] == "/dev/ttyACM0: no such device"
    assert "plug the scanner in" in items["Scanner"]["remedy"]
    assert items["Camera"] == {"name": "Camera", "state": "ok", "text": "connected", "remedy": "", "detail": ""}
    assert items["Outbox"]["text"] == "12 to send"
    truck = build_strip(
        "truck",
        "t1",
        {"broker": {"connected": True}, "pipeline": {"drivers": {"gps": {"connected": True}}, "records": 4}},
        0,
    )
    assert truck["state"] == "ok" and [i["name"] for i in truck["items"]] == ["Broker", "Outbox", "gps"]
    assert truck["devices"] == [{"name": "gps", "connected": True}] and truck["summary"] == {"records": 4}


def test_station_server__tls_serves_https_with_secure_cookies_and_stops_with_the_event(
    tmp_path: Path, broker_pki: Any
) -> None:
    import http.client
    import ssl
    import threading

    from edge_agent.spine.outbox import Outbox
    from edge_agent.station.config import StationConfig
    from edge_agent.station.server import Station, StationDeps

    Outbox.open_checked(tmp_path / "outbox.db")[0].close()
    port = _free_port()
    cfg = StationConfig(port=port, tls_cert=broker_pki.server_pem, tls_key=broker_pki.server_key)
    stop = threading.Event()
    station = Station(
        StationDeps(cfg, "b1", "bench", tmp_path / "outbox.db", LEVELS, None, lambda: {"broker": {}}, stop)
    )
    station.start()
    try:
        assert station.url == f"https://127.0.0.1:{port}/"
        ctx = ssl.create_default_context(cafile=str(broker_pki.ca_pem))
        ctx.check_hostname = False  # the test server certificate names localhost; the chain is what matters
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        conn.request("GET", "/")
        r = conn.getresponse()
        r.read()
        conn.close()
        assert r.status == 200
        cookie = r.getheader("set-cookie") or ""
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert r.getheader("strict-transport-security") == "max-age=31536000"
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        with pytest.raises((http.client.HTTPException, OSError)):
            plain.request("GET", "/")
            plain.getresponse().read()
    finally:
        stop.set()
        station.stop()
    assert not station.running, "the stop event ends the station"


def test_operators_cli__add_reads_the_pin_from_stdin_and_refuses_a_bad_one(tmp_path: Path) -> None:
    import subprocess
    import sys

    ops = tmp_path / "operators.toml"
    cmd = [sys.executable, "-m", "edge_agent.station.operators", "add", str(ops), "wang.fang", "--role", "supervisor"]
    r = subprocess.run(cmd, input="2468\n", capture_output=True, text=True, check=False)
    assert r.returncode == 0 and "operator wang.fang (supervisor) saved" in r.stdout
    assert "2468" not in ops.read_text() and authenticate(load_operators(ops), "wang.fang", "2468") is not None
    r = subprocess.run([*cmd[:-2], "--role", "operator"], input="12\n", capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "PIN: expected 4 to 12 digits" in r.stderr


def _add_cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "edge_agent.station.operators", "add", str(path), "li.na", *args]
    return subprocess.run(cmd, input="1234\n", capture_output=True, text=True, check=False)


def test_operators_cli__add__the_agents_config_is_refused_and_left_untouched(tmp_path: Path) -> None:
    # The mistake: the config.toml given where the operators file goes (service install: 0640).
    config = tmp_path / "config.toml"
    head = b'profile = "bench"\nstate_dir = "state"\n\n[device]\nid = "b1"\nsite = "s"\n\n'
    shipped = head + (Path(__file__).parents[2] / "config" / "bench.toml").read_bytes()
    config.write_bytes(shipped)
    config.chmod(0o640)
    r = _add_cli(config)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(
        f"error: {config}: found key 'profile', but an operators file holds only"
    )
    assert "this looks like another file (the agent's config.toml?); left it unchanged" in r.stderr
    assert config.read_bytes() == shipped and config.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"], "no temporary file left"


def test_operators_cli__add__a_folder_or_a_missing_folder_is_one_line_naming_the_path(tmp_path: Path) -> None:
    r = _add_cli(tmp_path)
    assert r.returncode == 2
    assert (
        r.stderr
        == f"error: {tmp_path}: is a folder; expected the operators FILE to write, e.g. {tmp_path}/operators.toml\n"
    )
    missing = tmp_path / "nope" / "operators.toml"
    r = _add_cli(missing)
    assert r.returncode == 2
    assert r.stderr.startswith(f"error: {missing}: the folder {missing.parent} does not exist")
    assert r.stderr.count("\n") == 1 and not missing.parent.exists()


def test_operators__mode_never_widens_and_a_new_file_follows_a_folder_shared_with_the_agent(tmp_path: Path) -> None:
    # install-service: /etc/edge-agent is root:edge-agent 0750 and the agent reads its files through the group.
    group = 4242 if os.geteuid() == 0 else os.getgid()
    etc = tmp_path / "etc-edge-agent"
    etc.mkdir()
    os.chown(etc, -1, group)
    etc.chmod(0o750)
    add_operator(etc / "operators.toml", "a", "operator", "1234", None)
    st = (etc / "operators.toml").stat()
    assert (st.st_mode & 0o777, st.st_gid) == (0o640, group), "the agent's group can read it, others cannot"
    # An existing file keeps its owner, group and mode, less anything for others.
    existing = tmp_path / "operators.toml"
    add_operator(existing, "a", "operator", "1234", None)
    assert existing.stat().st_mode & 0o777 == 0o600, "a private folder: a private file"
    os.chown(existing, -1, group)
    existing.chmod(0o664)
    add_operator(existing, "b", "operator", "5678", None)
    st = existing.stat()
    assert (st.st_mode & 0o777, st.st_gid) == (0o660, group)
    existing.chmod(0o640)
    add_operator(existing, "c", "operator", "9012", None)
    assert existing.stat().st_mode & 0o777 == 0o640 and sorted(load_operators(existing)) == ["a", "b", "c"]


def test_verdict_view__field_boxes_from_the_reader_reach_the_page() -> None:
    # InspectionResult.record_body() names them `field_boxes` (corners in photo pixels)
    corners = [[10.0, 20.0], [110.0, 20.0], [110.0, 40.0], [10.0, 40.0]]
    v = verdict_view(_body(field_boxes={"order_no": corners, "sku": None}), LEVELS)
    boxes = {f["name"]: f["box"] for f in v["fields"]}
    assert boxes["order_no"] == corners
    assert boxes["sku"] is None and boxes["quantity"] is None


def test_verdict_view__the_characters_the_reader_could_read_two_ways_become_switches() -> None:
    from edge_agent.pipelines.bench.fields import LabelMatcher, extract_fields, load_reasons, load_template
    from edge_agent.pipelines.bench.rules_config import FieldsConfig, ValidationConfig
    from edge_agent.pipelines.bench.types import TextLine

    template = load_template(FieldsConfig())
    # The reader is sure of every character but the I at 1 and the 0 at 7, which its pattern allows both ways.
    value = "I1P4G10R"
    conf = tuple(0.8 if i in (0, 6) else 1.0 for i in range(len(value)))
    line = TextLine(value, 0.95, (300, 100, 220, 40), conf)
    lines = [TextLine("商品编码:", 0.99, (100, 100, 150, 40), (1.0,) * 5), line]
    ext = extract_fields(lines, template, load_reasons(ValidationConfig()), LabelMatcher(template))
    assert ext.values["sku"].value == value
    issues = [i.to_json() for i in ext.issues if i.field == "sku"]
    assert [i["code"] for i in issues] == ["ambiguous_value"]
    v = verdict_view(_body(fields={**_body()["fields"], "sku": value}, review_reasons=issues), LEVELS)
    assert v["reasons"] == ["SKU: could be read two ways (I or 1 at character 1, 0 or O at character 7)"]
    doubts = {f["name"]: f["doubts"] for f in v["fields"]}
    assert doubts["sku"] == [{"at": 0, "read": "I", "other": "1"}, {"at": 6, "read": "0", "other": "O"}]
    assert all(d == [] for n, d in doubts.items() if n != "sku")
    # A value that no longer holds the character as read (a person corrected it) names no switch there.
    v = verdict_view(_body(fields={**_body()["fields"], "sku": "I1P4G1OR"}, review_reasons=issues), LEVELS)
    assert next(f["doubts"] for f in v["fields"] if f["name"] == "sku") == [{"at": 0, "read": "I", "other": "1"}]
    # A separator doubt is no letter/digit switch.
    gap = {
        "code": "ambiguous_value",
        "field": "sku",
        "message": "sku: AB12 CD could be read two ways (a space before character 5: a separator (- _ / .) or none)",
    }
    assert (
        next(f["doubts"] for f in verdict_view(_body(review_reasons=[gap]), LEVELS)["fields"] if f["name"] == "sku")
        == []
    )


def test_station_server__cookie_less_polling_on_loopback_does_not_sign_out_the_page(tmp_path: Path) -> None:
    """Without sign-in every loopback visitor is the local operator. A script polling the API without a
    cookie (a monitoring check, curl) must not open a session per request: those pushed the page's own
    session out, and the operator's next decision was refused as a wrong CSRF token."""
    import http.client
    import json
    import re
    import threading

    from edge_agent.spine.outbox import Outbox
    from edge_agent.station.config import StationConfig
    from edge_agent.station.server import Station, StationDeps
    from edge_agent.station.web import SESSIONS_MAX

    Outbox.open_checked(tmp_path / "outbox.db")[0].close()
    port = _free_port()
    stop = threading.Event()
    station = Station(
        StationDeps(StationConfig(port=port), "t1", "truck", tmp_path / "outbox.db", LEVELS, None, dict, stop)
    )

    def send(method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        conn.close()
        return r

    station.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        page = conn.getresponse()
        html = page.read().decode()
        conn.close()
        cookie = (page.getheader("set-cookie") or "").split(";")[0]
        m = re.search(r'name="csrf-token" content="([^"]+)"', html)
        assert page.status == 200 and cookie.startswith("station_session=") and m
        for _ in range(SESSIONS_MAX + 10):
            poll = send("GET", "/api/state", {})
            assert poll.status == 200 and poll.getheader("set-cookie") is None, "a cookie-less poll opens no session"
        decided = send(
            "POST",
            "/api/review/1",
            {"Cookie": cookie, "X-CSRF-Token": m.group(1), "Content-Type": "application/json"},
            json.dumps({"action": "accept"}).encode(),
        )
        assert decided.status == 404, "the page's session and token still stand (this profile has no queue)"
    finally:
        stop.set()
        station.stop()


def test_station_server__a_slow_start_still_logs_when_it_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """start() waits a bounded time; a station that serves later (a cold Pi) says so then, so a technician
    is not left with the "not serving yet" line alone."""
    import logging
    import threading

    from edge_agent.spine.outbox import Outbox
    from edge_agent.station.config import StationConfig
    from edge_agent.station.server import Station, StationDeps
    from tests.helpers import wait_until

    Outbox.open_checked(tmp_path / "outbox.db")[0].close()
    stop = threading.Event()
    station = Station(
        StationDeps(StationConfig(port=_free_port()), "t1", "truck", tmp_path / "outbox.db", LEVELS, None, dict, stop)
    )
    caplog.set_level(logging.INFO, logger="edge_agent.station.server")
    station.start(timeout_s=0)
    try:
        assert "not serving yet after 0 s" in caplog.text
        assert wait_until(lambda: f"station serving on {station.url}" in caplog.text), caplog.text
    finally:
        stop.set()
        station.stop()
