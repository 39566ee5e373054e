"""The station's safety rules against the running daemon: sign-in on a LAN bind, CSRF, photos, hostile requests."""

from __future__ import annotations

import http.client
import json
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from edge_agent.station.operators import add_operator
from edge_agent.station.web import SESSIONS_MAX
from tests.broker import Broker
from tests.helpers import wait_until
from tests.station.harness import BenchRig

LAN = "0.0.0.0"  # noqa: S104 - the point of these tests: a station reachable from the network
pytestmark = pytest.mark.slow
OPERATOR, PIN = "li.lei", "7305"


class Client:
    """One browser-like HTTP client: keeps the session cookie, follows nothing, shows every status."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""

    def send(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            h = {"Cookie": self.cookie} if self.cookie else {}
            conn.request(method, path, body=body, headers={**h, **(headers or {})})
            r = conn.getresponse()
            data = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
        finally:
            conn.close()
        if m := re.match(r"(station_session=[^;]*)", hdrs.get("set-cookie", "")):
            self.cookie = m.group(1)
        return r.status, hdrs, data

    def post_json(self, path: str, data: Any, csrf: str | None) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        if csrf is not None:
            headers["X-CSRF-Token"] = csrf
        status, _, body = self.send("POST", path, json.dumps(data).encode(), headers)
        return status, json.loads(body or b"{}")


def _csrf(html: bytes) -> str:
    m = re.search(rb'name="csrf-token" content="([^"]+)"', html)
    assert m, "every page carries its CSRF token"
    return m.group(1).decode()


def _raw(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture(scope="module")
def lan_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BenchRig]:
    """A bench listening on every interface, so sign-in is on; photos never kept."""
    work = tmp_path_factory.mktemp("lan")
    broker = Broker(work / "broker").start()
    operators = work / "operators.toml"
    add_operator(operators, OPERATOR, "operator", PIN, None)
    rig = BenchRig(
        work / "bench",
        broker.url,
        station={"listen": LAN, "operators_file": operators, "max_body_kb": 4},
        review={"keep_images": "never"},
    )
    try:
        yield rig.start()
    finally:
        rc = rig.stop()
        broker.stop()
        assert rc == 0, rig.log()


def _signed_in(rig: BenchRig) -> tuple[Client, str]:
    c = Client(rig.port)
    status, _, html = c.send("GET", "/signin")
    assert status == 200
    form = f"csrf={_csrf(html)}&who={OPERATOR}&pin={PIN}".encode()
    status, hdrs, _ = c.send("POST", "/signin", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303 and hdrs["location"] == "/"
    status, _, html = c.send("GET", "/")
    assert status == 200 and OPERATOR.encode() in html
    return c, _csrf(html)


def test_station_security__lan_bind_requires_sign_in(lan_rig: BenchRig) -> None:
    anon = Client(lan_rig.port)
    status, hdrs, _ = anon.send("GET", "/")
    assert status == 303 and hdrs["location"] == "/signin"
    for path in ("/api/state", "/events", "/photo/1"):
        assert anon.send("GET", path)[0] == 401, path
    assert anon.post_json("/api/review/1", {"action": "accept"}, "x")[0] == 401
    # A wrong PIN is refused and says nothing about which part was wrong.
    status, _, html = anon.send("GET", "/signin")
    form = f"csrf={_csrf(html)}&who={OPERATOR}&pin=0000".encode()
    status, _, body = anon.send("POST", "/signin", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 401 and b"Wrong id, PIN or badge" in body
    assert anon.send("GET", "/api/state")[0] == 401
    c, csrf = _signed_in(lan_rig)
    assert c.send("GET", "/api/state")[0] == 200
    assert c.send("GET", "/history")[0] == 403, "the queue history is for supervisors"
    form_h = {"Content-Type": "application/x-www-form-urlencoded"}
    assert c.send("POST", "/signout", b"csrf=wrong", form_h)[0] == 403
    status, hdrs, _ = c.send("POST", "/signout", f"csrf={csrf}".encode(), form_h)
    assert status == 303 and hdrs["location"] == "/signin"
    assert c.send("GET", "/api/state")[0] == 401, "signed out: the old session is gone"


def test_station_security__visitors_who_do_not_sign_in_cannot_push_out_a_signed_in_operator(
    lan_rig: BenchRig,
) -> None:
    c, _ = _signed_in(lan_rig)
    for _ in range(SESSIONS_MAX + 10):  # anyone on the LAN can open the sign-in form, each time a new session
        assert Client(lan_rig.port).send("GET", "/signin")[0] == 200
    assert c.send("GET", "/api/state")[0] == 200, "the operator is still signed in"


def test_station_security__guessing_pins_is_slowed_down(lan_rig: BenchRig) -> None:
    c = Client(lan_rig.port)
    _, _, html = c.send("GET", "/signin")
    form = f"csrf={_csrf(html)}&who=mallory&pin=".encode()
    codes = [
        c.send("POST", "/signin", form + str(1000 + i).encode(), {"Content-Type": "application/x-www-form-urlencoded"})[
            0
        ]
        for i in range(7)
    ]
    assert codes == [401] * 5 + [429] * 2


def test_station_security__csrf_token_required(lan_rig: BenchRig) -> None:
    # The sign-in form itself needs the token.
    c = Client(lan_rig.port)
    c.send("GET", "/signin")
    form = f"who={OPERATOR}&pin={PIN}".encode()
    status, _, _ = c.send("POST", "/signin", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403
    c, csrf = _signed_in(lan_rig)
    assert c.post_json("/api/review/999", {"action": "accept"}, None)[0] == 403
    assert c.post_json("/api/review/999", {"action": "accept"}, "not-the-token")[0] == 403
    status, body = c.post_json("/api/review/999", {"action": "accept"}, csrf)
    assert status == 404 and "not found" in body["error"], "with the token the request reaches the queue"
    headers = {"Content-Type": "application/json", "X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}
    assert c.send("POST", "/api/review/999", b'{"action":"accept"}', headers)[0] == 403


def test_station_security__photo_not_kept_is_404_and_decisions_need_a_fresh_item(lan_rig: BenchRig) -> None:
    c, csrf = _signed_in(lan_rig)
    lan_rig.present("slip_typical_506_blur.jpg")  # a retake: queued for review

    def queued() -> list[dict[str, Any]]:
        return list(json.loads(c.send("GET", "/api/state")[2])["queue"])

    assert wait_until(queued, 60), lan_rig.log()
    [item] = queued()
    assert item["kind"] == "retake" and item["retake"], "the page says what to fix"
    assert item["photo"] is None
    status, _, body = c.send("GET", f"/photo/{item['review_id']}")
    assert status == 404 and b"not kept" in body
    status, body = c.post_json(f"/api/review/{item['review_id']}", {"action": "reject", "why": "duplicate"}, csrf)
    assert status == 200 and body["decision"] == "rejected"
    status, body = c.post_json(f"/api/review/{item['review_id']}", {"action": "accept"}, csrf)
    assert status == 409 and "already decided" in body["error"]


def test_station_security__bad_requests_get_4xx_and_the_daemon_runs_on(lan_rig: BenchRig) -> None:
    c, csrf = _signed_in(lan_rig)
    json_h = {"Content-Type": "application/json", "X-CSRF-Token": csrf}
    big = json.dumps({"action": "accept", "why": "x" * 10_000}).encode()
    assert c.send("POST", "/api/review/1", big, json_h)[0] == 413
    assert c.send("POST", "/api/review/1", b"{not json", json_h)[0] == 400
    assert c.send("POST", "/api/review/1", b"[1, 2]", json_h)[0] == 400
    assert c.send("POST", "/api/review/1", b'{"action": "delete"}', json_h)[0] == 400
    assert c.send("POST", "/api/review/1", b'{"action": "correct", "changes": [1]}', json_h)[0] == 400
    assert c.send("POST", "/api/review/1", b"\xff\xfe", json_h)[0] == 400
    form_h = {**json_h, "Content-Type": "text/plain"}
    assert c.send("POST", "/api/review/1", b'{"action": "accept"}', form_h)[0] == 415
    assert c.send("POST", "/api/review/abc", b"{}", json_h)[0] == 400
    assert c.send("GET", "/review/99999999999999999999")[0] == 400
    assert c.send("GET", "/nowhere")[0] == 404
    assert c.send("GET", "/?" + "q" * 2000)[0] == 414
    status, _, body = c.send("DELETE", "/api/review/1", None, json_h)
    assert status == 405 and b"Traceback" not in body
    # Below HTTP: garbage, a huge header, a body longer than announced.
    assert _raw(lan_rig.port, b"\x16\x03\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"
    reply = _raw(lan_rig.port, huge)
    assert reply == b"" or reply.startswith(b"HTTP/1.1 4"), reply[:80]
    lie = b"POST /signin HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\nwho=a"
    assert _raw(lan_rig.port, lie).startswith(b"HTTP/1.1 4")
    assert lan_rig.alive()
    assert lan_rig.get("healthz") == (200, b"ok")
    assert c.send("GET", "/api/state")[0] == 200
