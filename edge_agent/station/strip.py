"""The status strip: device, broker, outbox and each driver's state, in green/amber/red with the remedy."""

from __future__ import annotations

from typing import Any

OUTBOX_WARN = 1000  # undelivered records: the broker has been away a while
# Remedies worded as `edge-agent doctor` words them, so the page and the console agree.
REMEDIES = {
    "camera": "plug the camera in; check `ls /dev/video*` (a folder camera: check its upload folder)",
    "scanner": "plug the scanner in; check `ls /dev/serial/by-id/`",
    "broker": "check the network and mqtt.url; `edge-agent doctor` tests the broker",
    "device": "check the cable and power; `edge-agent doctor` probes it",
}


def _item(name: str, state: str, text: str, remedy: str = "", detail: str = "") -> dict[str, str]:
    return {"name": name, "state": state, "text": text, "remedy": remedy if state != "ok" else "", "detail": detail}


def _driver(name: str, kind: str, st: dict[str, Any]) -> dict[str, str]:
    if st.get("connected"):
        return _item(name, "ok", "connected")
    # The driver's own error (a port path, errno) goes in the tooltip; the strip says it short.
    err = str(st.get("last_error") or "")
    return _item(name, "bad", "not connected", REMEDIES.get(kind, REMEDIES["device"]), err[:200])


def _scalar(v: object) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def build_strip(  # noqa: PLR0912 - one branch per profile and device kind reads best here
    profile: str, device: str, status: dict[str, Any], outbox_depth: int | None
) -> dict[str, Any]:
    """What the strip shows, from the daemon's status (broker, pipeline) and the outbox depth."""
    items = []
    broker = status.get("broker") or {}
    if broker.get("connected"):
        items.append(_item("Broker", "ok", "connected"))
    else:
        items.append(_item("Broker", "bad", str(broker.get("error") or "unreachable")[:120], REMEDIES["broker"]))
    if outbox_depth is None:
        items.append(_item("Outbox", "warn", "not readable", "run `edge-agent status`"))
    else:
        state = "ok" if outbox_depth < OUTBOX_WARN else "warn"
        items.append(_item("Outbox", state, f"{outbox_depth} to send", "records wait for the broker; none are lost"))
    pipeline = status.get("pipeline") or {}
    if profile == "bench":
        for key, label in (("camera", "Camera"), ("scanner", "Scanner")):
            st = pipeline.get(key)
            if st is None:
                if key == "scanner":
                    items.append(_item(label, "ok", "none configured"))
                continue
            items.append(_driver(label, key, st))
    else:
        for group in ("drivers", "meters"):
            for name, st in sorted((pipeline.get(group) or {}).items()):
                if isinstance(st, dict):
                    items.append(_driver(str(name), "device", st))
    extra: dict[str, Any] = {}
    if profile != "bench":
        # What `edge-agent status` shows for the pipeline: each device's counters, then the scalar figures.
        devices = []
        for group in ("drivers", "meters"):
            for name, st in sorted((pipeline.get(group) or {}).items()):
                if isinstance(st, dict):
                    devices.append({"name": str(name), **{k: v for k, v in st.items() if _scalar(v)}})
        summary = {k: v for k, v in (pipeline.get("pipeline") or {}).items() if _scalar(v)}
        summary.update({k: v for k, v in pipeline.items() if _scalar(v)})
        extra = {"devices": devices, "summary": summary}
    worst = (
        "bad"
        if any(i["state"] == "bad" for i in items)
        else "warn"
        if any(i["state"] == "warn" for i in items)
        else "ok"
    )
    return {"device": device, "profile": profile, "state": worst, "items": items, **extra}
