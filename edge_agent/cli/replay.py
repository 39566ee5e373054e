"""`edge-agent telematics replay`: the whole truck pipeline, offline, on recorded NMEA (and fuel/weight) logs.

Imported only when the command runs (cli/truck.py registers it), so other commands never load pynmea2.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge_agent.cli.common import EXIT_CONFIG, EXIT_FAIL, EXIT_OK, fail, load_or_exit
from edge_agent.drivers.base import FrameError
from edge_agent.drivers.nmea.epochs import NmeaDecoder
from edge_agent.drivers.readings import Fix, FuelLevel, FuelRate, Weighing
from edge_agent.emissions import load_factors
from edge_agent.errors import ConfigError
from edge_agent.pipelines.truck.config import TelematicsConfig
from edge_agent.pipelines.truck.pipeline import Record, TruckPipeline

PID_FUEL_RATE, PID_FUEL_LEVEL = 0x5E, 0x2F
FUEL_EXPECTED = (
    "one reading a line: an optional time, then an ELM327 answer to PID 5E or 2F such as '41 5E 01 90', "
    "or an LLS frame in hex given --config with an lls fuel sensor"
)
WEIGHT_EXPECTED = (
    "one reading a line: an optional time, then a scale line such as 'S S     12.34 kg' (MT-SICS), "
    "'ST,GS,+00012.34kg' or '+0026.90 G S'"
)
# A log's fixes are replayed in time order within this many (a receiver hands an epoch on late now and then);
# the whole log is never held, so a week's log replays in the memory of a short one.
REORDER_FIXES = 256


@dataclass
class _Timed:
    t: float
    order: int
    reading: Fix | FuelRate | FuelLevel | Weighing


def cmd_replay(args: argparse.Namespace) -> int:
    transport_id = Path(args.log).stem
    if args.config:
        agent = load_or_exit(args)
        cfg = agent.telematics
        transport_id = cfg.transport_id or agent.device.id
    else:
        cfg = TelematicsConfig()
    try:
        factors = load_factors(cfg.emissions.factors_file)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return EXIT_CONFIG
    try:
        # The NMEA log is read as it is replayed (a week's log is hundreds of MB); the side logs are small.
        nmea_file = open(args.log, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        return fail(f"cannot read {exc.filename}: {exc.strerror}", EXIT_FAIL)
    with nmea_file:
        try:
            fuel_bytes = Path(args.fuel).read_bytes() if args.fuel else b""
            weight_bytes = Path(args.weight).read_bytes() if args.weight else b""
        except OSError as exc:
            return fail(f"cannot read {exc.filename}: {exc.strerror}", EXIT_FAIL)
        return _replay(
            args, cfg, factors, transport_id, nmea_file=nmea_file, fuel_bytes=fuel_bytes, weight_bytes=weight_bytes
        )


def _replay(
    args: argparse.Namespace,
    cfg: TelematicsConfig,
    factors: Any,
    transport_id: str,
    *,
    nmea_file: Any,
    fuel_bytes: bytes,
    weight_bytes: bytes,
) -> int:
    decoder, counts = NmeaDecoder(), {"comments": 0, "text_lines": 0}
    fixes = _decode_nmea(nmea_file, decoder, counts)
    first = next(fixes, None)
    # A drive without movement still has sentences (a summary of zeros); a file without any, empty or
    # not NMEA at all, is a wrong file.
    if decoder.stats.sentences == 0:
        empty = "" if counts["text_lines"] else "empty file, "
        return fail(
            f"{args.log}: {empty}no NMEA sentence found (expected lines such as $GPRMC,...*hh from a GNSS "
            "receiver); is this an NMEA log?",
            EXIT_FAIL,
        )
    t0 = first.t if first else 0.0
    side: list[_Timed] = []
    fuel_used, fuel_bad = _side_readings(fuel_bytes, t0, side, _fuel_reading, cfg)
    weight_used, weight_bad = _side_readings(weight_bytes, t0, side, _weight_reading, cfg)
    for path, used, bad, what, expected in (
        (args.fuel, fuel_used, fuel_bad, "fuel", FUEL_EXPECTED),
        (args.weight, weight_used, weight_bad, "scale", WEIGHT_EXPECTED),
    ):
        if path and not used:
            found = f"none of its {bad} line(s) is a {what} reading" if bad else "no line in it"
            return fail(f"{path}: {found} (expected {expected}); is this a {what} log?", EXIT_FAIL)
    side.sort(key=lambda x: (x.t, x.order))

    pipe = TruckPipeline(cfg, factors, transport_id)
    out = sys.stdout
    fixes_in_order = _in_time_order(itertools.chain([first] if first else [], fixes), REORDER_FIXES)
    # At the same time a fix goes first, then the side readings in their files' order.
    for item in heapq.merge(fixes_in_order, side, key=lambda x: (x.t, not isinstance(x.reading, Fix), x.order)):
        _print(_push(pipe, item.reading), args, out)
    _print(pipe.finish(), args, out)

    st = decoder.stats
    summary: dict[str, Any] = {
        "type": "summary",
        "log": str(args.log),
        "sentences": st.sentences,
        "bad_checksum": st.bad_checksum,
        "bad_frames": st.bad_frames,
        "comments": counts["comments"],
        "by_type": dict(sorted(st.by_type.items())),
        "by_talker": dict(sorted(st.by_talker.items())),
        "epochs": st.epochs,
        **pipe.summary(),
        "fuel_bad_lines": fuel_bad,
        "weight_bad_lines": weight_bad,
    }
    if args.json:
        out.write(json.dumps(summary, ensure_ascii=False) + "\n")
    else:
        _print_summary(summary, out)
    return EXIT_OK


def _decode_nmea(lines: Iterable[bytes], decoder: NmeaDecoder, counts: dict[str, int]) -> Iterator[_Timed]:
    """Each fix of a log, as it is read; counts["comments"] and ["text_lines"] (lines not blank) as it goes."""
    n = 0
    for chunk in lines:
        for raw in chunk.splitlines():  # a CR alone ends a line too
            if raw.strip():
                counts["text_lines"] += 1
            if raw.startswith(b"#"):
                counts["comments"] += 1
                continue
            try:
                fix = decoder.feed_line(raw.decode("ascii"))
            except UnicodeDecodeError:
                decoder.stats.bad_frames += 1
                continue
            except FrameError:
                continue
            if fix is not None:
                yield _Timed(fix.t_utc.timestamp(), n, fix)
                n += 1
    last = decoder.flush()
    if last is not None:
        yield _Timed(last.t_utc.timestamp(), n, last)


def _in_time_order(items: Iterable[_Timed], window: int) -> Iterator[_Timed]:
    """items by (t, order), sorted within a sliding window of `window` items."""
    heap: list[tuple[float, int, _Timed]] = []
    for x in items:
        heapq.heappush(heap, (x.t, x.order, x))
        if len(heap) > window:
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


def _push(pipe: TruckPipeline, r: Fix | FuelRate | FuelLevel | Weighing) -> list[Record]:
    if isinstance(r, Fix):
        return pipe.push_fix(r)
    if isinstance(r, FuelRate):
        return pipe.push_fuel_rate(r)
    if isinstance(r, FuelLevel):
        return pipe.push_fuel_level(r)
    return pipe.push_weighing(r)


def _print(recs: list[Record], args: argparse.Namespace, out: Any) -> None:
    for kind, body in recs:
        if kind == "telemetry" and not args.telemetry:
            continue
        if args.json:
            out.write(json.dumps({"type": kind, **body}, ensure_ascii=False) + "\n")
        elif kind == "trip":
            out.write(
                f"trip  {body['start']['t']} -> {body['end']['t']}  {body['route']}  "
                f"{body['distance_km']:.3f} km  {body['duration_s'] / 60:.1f} min  "
                f"fuel {_fmt(body['fuel_used_l'], 'L')} ({body['fuel_source']})  "
                f"CO2 {_fmt(body['co2_kg'], 'kg')} {body['co2_boundary']}\n"
            )
        elif kind == "event":
            detail = body.get("amount_l", body.get("delta_kg"))
            out.write(f"event {body['timestamp']}  {body['event']}  {detail}\n")
        else:
            out.write(f"telemetry {body['timestamp']}  {body['lat']:.6f},{body['lon']:.6f}  {body['reason']}\n")


def _fmt(v: float | None, unit: str) -> str:
    return "-" if v is None else f"{v:.2f} {unit}"


def _print_summary(s: dict[str, Any], out: Any) -> None:
    out.write(f"summary of {s['log']}\n")
    for key in (
        "sentences",
        "bad_checksum",
        "bad_frames",
        "epochs",
        "fixes",
        "fixes_valid",
        "fixes_used",
        "fixes_rejected",
        "drift_suppressed",
        "distance_km",
        "trips",
        "trips_discarded",
        "events",
    ):
        out.write(f"  {key:<17} {s[key]}\n")
    for key in ("fuel_bad_lines", "weight_bad_lines"):
        if s[key]:
            out.write(f"  {key:<17} {s[key]}\n")
    if s["rejected"]:
        out.write("  rejected by       " + ", ".join(f"{k} {v}" for k, v in sorted(s["rejected"].items())) + "\n")
    out.write("  sentence types    " + ", ".join(f"{k} {v}" for k, v in s["by_type"].items()) + "\n")


def _split_time(line: str, t0: float, n: int) -> tuple[float, str]:
    """(epoch seconds, rest): a leading ISO time or seconds offset, else one second per line from t0."""
    head, _, rest = line.partition(" ")
    if rest:
        try:
            return t0 + float(head), rest.strip()
        except ValueError:
            pass
        try:
            t = datetime.fromisoformat(head.replace("Z", "+00:00"))
            return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp(), rest.strip()
        except ValueError:
            pass
    return t0 + n, line.strip()


def _side_readings(data: bytes, t0: float, timed: list[_Timed], parse: Any, cfg: TelematicsConfig) -> tuple[int, int]:
    """Append each line's reading to timed; (lines used, bad lines), blank and '#' lines being neither."""
    used = bad = 0
    for n, raw in enumerate(data.splitlines()):
        text = raw.decode("ascii", "replace").strip()
        if not text or text.startswith("#"):
            continue
        # A frame may itself start with a number ('41 5E 01 90', KERN '+0026.90 G S'): when the line does not
        # read as time + frame, it is read as a frame without a time.
        for t, payload in dict.fromkeys((_split_time(text, t0, n), (t0 + n, text))):
            try:
                reading = parse(t, payload, cfg)
            except (FrameError, ValueError, IndexError):
                continue
            if reading is not None:
                timed.append(_Timed(t, len(timed), reading))
                used += 1
                break
        else:
            bad += 1
    return used, bad


def _utc(t: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=t)


def _fuel_reading(t: float, payload: str, cfg: TelematicsConfig) -> FuelRate | FuelLevel | None:
    compact = payload.replace(" ", "").upper()
    if compact.startswith("41"):
        from edge_agent.drivers.elm327.driver import decode_pid, parse_elm_response

        pid = int(compact[2:4], 16)
        value = decode_pid(pid, parse_elm_response(payload, pid))
        if pid == PID_FUEL_RATE:
            return FuelRate(0.0, _utc(t), value, "pid5e", payload)
        if pid == PID_FUEL_LEVEL:
            return FuelLevel(0.0, _utc(t), value, None, "pid2f", payload)
        return None
    from edge_agent.drivers.lls.driver import LlsConfig, level_litres, parse_lls_frame

    frame = parse_lls_frame(bytes.fromhex(compact))
    lls = cfg.fuel if isinstance(cfg.fuel, LlsConfig) else None
    litres = level_litres(frame.level_raw, lls) if lls is not None else None
    if litres is None:
        return None
    return FuelLevel(0.0, _utc(t), None, litres, "lls", payload)


def _weight_reading(t: float, payload: str, cfg: TelematicsConfig) -> Weighing:
    from edge_agent.drivers.scale.driver import parse_scale_line

    v = parse_scale_line(payload.encode("ascii", "replace"))
    return Weighing(0.0, _utc(t), v.load_kg, v.stable, v.gross, payload)
