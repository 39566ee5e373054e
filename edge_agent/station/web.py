"""The station's pages and endpoints (Starlette): live verdicts, review, sign-in, history, photos, events.

Safety rules kept here: sign-in whenever operators are configured (always off loopback), a CSRF
token on every state-changing request, HttpOnly SameSite=Strict cookies (Secure under TLS),
bounded bodies, a clear 4xx for bad requests and never a traceback on the page.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_agent.station.feed import FIELD_LABELS, Feed, item_view
from edge_agent.station.operators import Operator, authenticate

if TYPE_CHECKING:
    from edge_agent.station.config import StationConfig

log = logging.getLogger(__name__)

COOKIE = "station_session"
SESSIONS_MAX = 256
SIGNIN_FAILS_MAX = 5  # per id (or badge) within SIGNIN_WINDOW_S, then 429 until the window passes
SIGNIN_WINDOW_S = 60.0
SIGNIN_EXPIRED = "This page had expired (the station restarted, or it stood open too long): sign in again."
KEEPALIVE_S = 15.0
MAX_QUERY_CHARS = 512
MAX_HEADER_BYTES = 8 * 1024  # h11 bounds a header that trickles in; this bounds one that arrives whole
CSP = (
    "default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@dataclass
class Session:
    token: str
    csrf: str
    operator: str | None  # None: not signed in yet (sign-in page only)
    role: str = "operator"
    seen_mono: float = field(default_factory=time.monotonic)


@dataclass
class StationState:
    """Everything the pages need; built by the server, shared by the handlers."""

    cfg: StationConfig
    device: str
    profile: str
    feed: Feed
    status_strip: Callable[[], dict[str, Any]]
    operators: dict[str, Operator]
    tls: bool
    stopping: asyncio.Event
    arm_scanner: Callable[[bool], None] = lambda _armed: None
    sessions: OrderedDict[str, Session] = field(default_factory=OrderedDict)
    fails: dict[str, list[float]] = field(default_factory=dict)
    strip: dict[str, Any] = field(default_factory=dict)


def _templates() -> Environment:
    folder = Path(str(resources.files("edge_agent.station").joinpath("templates")))
    env = Environment(loader=FileSystemLoader(folder), autoescape=select_autoescape(["html"]), auto_reload=False)
    env.policies["json.dumps_kwargs"] = {"ensure_ascii": False, "sort_keys": False}
    return env


class BadRequest(HTTPException):
    """A 4xx with a short message that says what was expected."""


def build_app(state: StationState) -> Starlette:  # noqa: PLR0915 - the routes read best in one place
    env = _templates()
    cfg = state.cfg
    max_body = cfg.max_body_kb * 1024

    # ------------------------------------------------------------ sessions and guards

    def new_session(operator: str | None, role: str = "operator") -> Session:
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), operator, role)
        state.sessions[s.token] = s
        while len(state.sessions) > SESSIONS_MAX:
            # The oldest sign-in form's session goes first: anyone who can reach the page opens those, and
            # they must not push out the operators who signed in.
            form = next((t for t, o in state.sessions.items() if o.operator is None and o is not s), None)
            state.sessions.pop(form if form is not None else next(iter(state.sessions)))
        return s

    def session_of(request: Request) -> Session | None:
        token = request.cookies.get(COOKIE, "")
        s = state.sessions.get(token)
        if s is None:
            return None
        if time.monotonic() - s.seen_mono > cfg.session_idle_min * 60:
            state.sessions.pop(token, None)
            return None
        s.seen_mono = time.monotonic()
        state.sessions.move_to_end(token)
        return s

    def set_cookie(resp: Response, s: Session) -> Response:
        resp.set_cookie(COOKIE, s.token, httponly=True, samesite="strict", secure=state.tls, path="/")
        return resp

    def signed_in(request: Request) -> tuple[Session | None, Session | None]:
        """(session, fresh): on loopback without operators every visitor is the local operator. A page opens
        a session (its cookie and CSRF token); a cookie-less API request (a monitoring script) is served
        without one, so that polling cannot push the page's session out of the bounded table."""
        s = session_of(request)
        if s is not None and s.operator is not None:
            return s, None
        if cfg.sign_in_required:
            return None, None
        if is_api(request):
            return Session("", secrets.token_urlsafe(32), cfg.local_operator, "supervisor"), None
        fresh = new_session(cfg.local_operator, "supervisor")
        return fresh, fresh

    def is_api(request: Request) -> bool:
        return request.url.path.startswith(("/api/", "/events", "/photo/"))

    def guard(
        handler: Callable[[Request, Session], Awaitable[Response]], *, supervisor: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            if len(request.url.query) > MAX_QUERY_CHARS:
                raise BadRequest(414, "query string too long")
            s, fresh = signed_in(request)
            if s is None:
                if is_api(request):
                    return JSONResponse({"error": "sign in first"}, status_code=401)
                return RedirectResponse("/signin", status_code=303)
            if supervisor and s.role != "supervisor":
                raise BadRequest(403, "only a supervisor may see this page")
            if request.method == "POST":
                form_token = None
                if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                    form_token = _form(await read_body(request)).get("csrf", "")  # a plain form (sign out)
                check_csrf(request, s, form_token)
            resp = await handler(request, s)
            return set_cookie(resp, fresh) if fresh is not None else resp

        return wrapped

    def check_csrf(request: Request, s: Session, form_token: str | None = None) -> None:
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            raise BadRequest(403, "cross-site request refused")
        token = form_token if form_token is not None else request.headers.get("x-csrf-token", "")
        if not token or not hmac.compare_digest(token, s.csrf):
            raise BadRequest(403, "missing or wrong CSRF token: reload the page and try again")

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise BadRequest(400, "Content-Length: expected a number")
            if int(declared) > max_body:
                raise BadRequest(413, f"request body too large (limit {cfg.max_body_kb} KB)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise BadRequest(413, f"request body too large (limit {cfg.max_body_kb} KB)")
            chunks.append(chunk)
        return b"".join(chunks)

    def page(name: str, s: Session | None, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(
            device=state.device,
            profile=state.profile,
            operator=s.operator if s else None,
            role=s.role if s else None,
            csrf=s.csrf if s else "",
            sign_in=cfg.sign_in_required,
            **ctx,
        )
        return HTMLResponse(html, status_code=status)

    def snapshot() -> dict[str, Any]:
        feed = state.feed
        return {
            "device": state.device,
            "profile": state.profile,
            "status": state.strip,
            "counts": feed.counts.to_json(),
            "latest": feed.recent[0] if feed.recent else None,
            "recent": list(feed.recent)[:8],
            "queue": feed.queue_json(),
            "head_seq": feed.last_seq,
        }

    # ------------------------------------------------------------ pages

    async def live(request: Request, s: Session) -> Response:
        snap = await asyncio.to_thread(snapshot)
        return page("live.html", s, state_json=snap)

    async def review_next(request: Request, s: Session) -> Response:
        queue = await asyncio.to_thread(state.feed.queue_json)
        if not queue:
            return RedirectResponse("/?empty=1", status_code=303)
        return RedirectResponse(f"/review/{queue[0]['review_id']}", status_code=303)

    async def review_page(request: Request, s: Session) -> Response:
        desk = state.feed.desk
        if desk is None:
            raise BadRequest(404, "this profile has no review queue")
        item_id = _int_param(request, "item_id")
        from edge_agent.pipelines.bench.review import ReviewError

        try:
            item = await asyncio.to_thread(desk.get, item_id)
        except ReviewError:
            raise BadRequest(404, f"review item {item_id}: not found") from None
        view = item_view(item, state.feed.levels, state.feed.photo_url(item.id))
        queue = await asyncio.to_thread(state.feed.queue_json)
        return page(
            "review.html",
            s,
            item=view,
            labels=FIELD_LABELS,
            queue_len=len(queue),
            position=next((i + 1 for i, q in enumerate(queue) if q["review_id"] == item_id), None),
            correction_reasons=cfg.correction_reasons,
            reject_reasons=cfg.reject_reasons,
            canonical_reasons=list(desk.reasons.canonical),
            state_json={"item": view},
        )

    async def history(request: Request, s: Session) -> Response:
        desk = state.feed.desk
        items = [] if desk is None else await asyncio.to_thread(desk.history, 200)
        views = [item_view(i, state.feed.levels, None) for i in items]
        return page("history.html", s, items=views, labels=FIELD_LABELS)

    async def signin_form(request: Request) -> Response:
        s = session_of(request)
        if s is None:
            s = new_session(None)
        return set_cookie(page("signin.html", s, error=None), s)

    async def signin(request: Request) -> Response:
        s = session_of(request)
        form = _form(await read_body(request))
        if s is None:
            # The form outlived its session (the daemon restarted, or it stood open past session_idle_min):
            # the form again with a fresh session, not a bare error at the bench.
            s = new_session(None)
            return set_cookie(page("signin.html", s, 403, error=SIGNIN_EXPIRED), s)
        check_csrf(request, s, form.get("csrf", ""))
        who, pin = form.get("who", "").strip()[:128], form.get("pin", "").strip()[:64]
        key = who.lower() if pin else "badge"
        now = time.monotonic()
        recent = [t for t in state.fails.get(key, []) if now - t < SIGNIN_WINDOW_S]
        if len(recent) >= SIGNIN_FAILS_MAX:
            return page("signin.html", s, 429, error="Too many tries: wait a minute, then sign in again.")
        op = await asyncio.to_thread(authenticate, state.operators, who, pin) if who else None
        if op is None:
            state.fails[key] = [*recent, now]
            log.info("station: sign-in refused")
            return page("signin.html", s, 401, error="Wrong id, PIN or badge.")
        state.fails.pop(key, None)
        state.sessions.pop(s.token, None)
        fresh = new_session(op.id, op.role)
        log.info("station: %s signed in (%s)", op.id, op.role)
        return set_cookie(RedirectResponse("/", status_code=303), fresh)

    async def signout(request: Request, s: Session) -> Response:
        state.sessions.pop(s.token, None)
        resp = RedirectResponse("/signin" if cfg.sign_in_required else "/", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    # ------------------------------------------------------------ API

    async def api_state(request: Request, s: Session) -> Response:
        return JSONResponse(await asyncio.to_thread(snapshot))

    async def api_review(request: Request, s: Session) -> Response:
        from edge_agent.pipelines.bench.review import ACTIONS, ReviewError, ReviewRequest

        desk = state.feed.desk
        if desk is None:
            raise BadRequest(404, "this profile has no review queue")
        item_id = _int_param(request, "item_id")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise BadRequest(415, "expected Content-Type: application/json")
        try:
            data = json.loads(await read_body(request))
        except (ValueError, UnicodeDecodeError):
            raise BadRequest(400, "body: expected a JSON object") from None
        if not isinstance(data, dict):
            raise BadRequest(400, "body: expected a JSON object")
        action, changes, why = data.get("action"), data.get("changes", {}), data.get("why", "")
        if action not in ACTIONS:
            raise BadRequest(400, f"action: expected one of {', '.join(ACTIONS)}, got {action!r}"[:200])
        if not isinstance(changes, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int)) for k, v in changes.items()
        ):
            raise BadRequest(400, "changes: expected an object of field -> value")
        if not isinstance(why, str) or len(why) > 200:
            raise BadRequest(400, "why: expected text of at most 200 characters")
        req = ReviewRequest(item_id, str(s.operator), action, {k: str(v) for k, v in changes.items()}, why)
        try:
            item = await asyncio.to_thread(desk.decide, req)
        except ReviewError as exc:
            status = (
                404 if "not found" in str(exc) else 409 if "already" in str(exc) or "meanwhile" in str(exc) else 422
            )
            return JSONResponse({"error": str(exc)}, status_code=status)
        log.info("station: review item %s %s by %s", item.id, item.decision, s.operator)
        queue = await asyncio.to_thread(state.feed.queue_json)
        state.feed.hub.publish("queue", queue)
        nxt = queue[0]["review_id"] if queue else None
        return JSONResponse({"ok": True, "id": item.id, "decision": item.decision, "next": nxt})

    async def api_scanner(request: Request, s: Session) -> Response:
        try:
            data = json.loads(await read_body(request))
        except (ValueError, UnicodeDecodeError):
            raise BadRequest(400, "body: expected a JSON object") from None
        if not isinstance(data, dict) or not isinstance(data.get("armed"), bool):
            raise BadRequest(400, "armed: expected true or false")
        state.arm_scanner(data["armed"])
        return JSONResponse({"ok": True, "armed": data["armed"]})

    async def photo(request: Request, s: Session) -> Response:
        desk = state.feed.desk
        item_id = _int_param(request, "item_id")
        path = None if desk is None else await asyncio.to_thread(desk.photo, item_id)
        if path is None:
            return PlainTextResponse("no photo: not kept (bench.review.keep_images) or no such item", status_code=404)
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def events(request: Request, s: Session) -> Response:
        hub = state.feed.hub
        q = hub.subscribe()
        first = await asyncio.to_thread(snapshot)

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 1000\n"
                yield _sse("hello", first)
                while not state.stopping.is_set():
                    try:
                        item = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    if item is None:
                        return
                    name, text = item
                    yield f"event: {name}\ndata: {text}\n\n"
            finally:
                hub.unsubscribe(q)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    # ------------------------------------------------------------ errors and headers

    async def on_http_error(request: Request, exc: Exception) -> Response:
        detail = str(exc.detail) if isinstance(exc, HTTPException) else "bad request"
        code = exc.status_code if isinstance(exc, HTTPException) else 400
        if is_api(request) or request.method == "POST":
            return JSONResponse({"error": detail}, status_code=code)
        return PlainTextResponse(f"{code}: {detail}", status_code=code)

    async def on_error(request: Request, exc: Exception) -> Response:
        log.error("station: %s %s failed: %s", request.method, request.url.path, type(exc).__name__)
        return PlainTextResponse("500: the station hit an internal error; the daemon keeps running", status_code=500)

    routes = [
        Route("/", guard(live)),
        Route("/review/next", guard(review_next)),
        Route("/review/{item_id}", guard(review_page)),
        Route("/history", guard(history, supervisor=True)),
        Route("/signin", signin_form, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", guard(signout), methods=["POST"]),
        Route("/api/state", guard(api_state)),
        Route("/api/review/{item_id}", guard(api_review), methods=["POST"]),
        Route("/api/scanner", guard(api_scanner), methods=["POST"]),
        Route("/photo/{item_id}", guard(photo)),
        Route("/events", guard(events)),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(packages=[("edge_agent.station", "static")]), name="static"),
    ]
    security = [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
    ]
    if state.tls:
        security.append(("strict-transport-security", "max-age=31536000"))
    return Starlette(
        debug=False,
        routes=routes,
        middleware=[Middleware(SecurityHeaders, headers=security)],
        exception_handlers={HTTPException: on_http_error, Exception: on_error},
    )


class SecurityHeaders:
    """Pure ASGI middleware: the same security headers on every response, and no-store unless a route set one."""

    def __init__(self, app: ASGIApp, headers: list[tuple[str, str]]) -> None:
        self.app = app
        self.headers = [(k.encode(), v.encode()) for k, v in headers]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if sum(len(k) + len(v) for k, v in scope.get("headers", [])) > MAX_HEADER_BYTES:
            await PlainTextResponse("431: request headers too large", status_code=431)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in self.headers if k not in names]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _int_param(request: Request, name: str) -> int:
    raw = str(request.path_params.get(name, ""))
    if not raw.isdigit() or len(raw) > 12:
        raise BadRequest(400, f"{name}: expected a positive whole number, got {raw[:20]!r}")
    return int(raw)


def _form(body: bytes) -> dict[str, str]:
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(400, "form: expected application/x-www-form-urlencoded UTF-8") from None
    return {k: v[0] for k, v in parsed.items()}


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"
