"""`edge-agent sensors list` (serial ports and what is likely on each) and `sensors watch NAME` (live readings)."""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from edge_agent.cli.common import EXIT_CONFIG, EXIT_FAIL, EXIT_OK, add_config_arg, fail, load_or_exit, number_in
from edge_agent.drivers.base import DriverRunner
from edge_agent.drivers.readings import MeterReading

if TYPE_CHECKING:
    from edge_agent.cli.probe import ProbeResult
from edge_agent.settings import AgentConfig, resolve_config_path


def register(subparsers: Any) -> None:
    """Add the `sensors` command group to the top-level CLI."""
    p = subparsers.add_parser("sensors", help="serial ports and meters at a sensor point")
    sub = p.add_subparsers(dest="sensors_cmd", metavar="COMMAND")
    sub.required = True

    ls = sub.add_parser(
        "list",
        help="list serial ports and CAN interfaces and what is likely on each (NMEA, ELM327, MT-SICS, Modbus, J1939)",
        description="Lists the machine's serial ports, its SocketCAN interfaces and the ports in the config (or "
        "only each --port), and probes each: listens for NMEA sentences, then sends ATI (ELM327), I4/S "
        "(MT-SICS scale), a one-register Modbus read to unit 1 and V (slcan CAN adapter), at each family's "
        "usual baud rates. Behind an ELM327 it names which ECU answers which PID; on a CAN bus it only "
        "listens, and names the J1939 PGNs, source addresses and VIN it hears. Ports the running agent "
        "holds are reported busy and left alone.",
    )
    add_config_arg(ls)
    ls.add_argument(
        "--port", action="append", default=[], metavar="URL", help="probe only this port or pyserial URL (repeatable)"
    )
    ls.add_argument(
        "--timeout-s", type=number_in(float, 0.05, 60), default=1.2, help="per protocol and baud rate (default 1.2)"
    )
    ls.add_argument("--no-probe", action="store_true", help="only list the ports")
    ls.add_argument("--json", action="store_true", help="one JSON object per port")
    ls.set_defaults(func=cmd_list)

    w = sub.add_parser(
        "watch",
        help="show live readings of one configured meter",
        description="Polls the meter named NAME in [[sensors.meters]] and prints each reading "
        "until Ctrl-C (or --count readings). Stop the agent first: it holds the port.",
    )
    add_config_arg(w)
    w.add_argument("name", metavar="NAME", help="a meter name from [[sensors.meters]]")
    w.add_argument(
        "--count", type=number_in(int, 0), default=0, help="stop after this many readings (default: run until Ctrl-C)"
    )
    w.add_argument(
        "--timeout-s",
        type=number_in(float, 0.1),
        default=None,
        help="give up with an error after this long without a reading (default: 60 with --count, else never)",
    )
    w.add_argument("--json", action="store_true", help="one JSON object per reading")
    w.set_defaults(func=cmd_watch)


# ---------------------------------------------------------------- list


def _optional_config(args: argparse.Namespace) -> AgentConfig | None:
    """The config if there is one; `sensors list` also runs on a device not yet set up."""
    path = resolve_config_path(getattr(args, "config", None))
    if not path.exists() and args.config is None:
        return None
    return load_or_exit(args)


def _ports_to_list(args: argparse.Namespace, cfg: AgentConfig | None) -> dict[str, dict[str, Any]]:
    """Port -> row: the --port URLs if given, else the machine's ports and the config's; meters noted."""
    ports: dict[str, dict[str, Any]] = {}
    configured = _configured_ports(cfg)
    if args.port:
        for url in args.port:
            ports.setdefault(url, {"port": url, "description": "", "configured": ""})
    else:
        from serial.tools import list_ports

        for info in sorted(list_ports.comports(), key=lambda i: i.device):
            ports[info.device] = {"port": info.device, "description": info.description or "", "configured": ""}
        from edge_agent.drivers.j1939.probe import socketcan_interfaces

        for name in socketcan_interfaces():
            ports[name] = {"port": name, "description": "SocketCAN interface", "configured": ""}
        for port, _what in configured:
            ports.setdefault(port, {"port": port, "description": "", "configured": ""})
    for port, what in configured:
        if port in ports:
            previous = ports[port]["configured"]
            ports[port]["configured"] = f"{previous}; {what}" if previous else what
    return ports


def _configured_ports(cfg: AgentConfig | None) -> list[tuple[str, str]]:
    """(port, what the config puts there) for the active profile's serial devices: the sensors' meters, a
    truck's GPS, OBD adapter, fuel sensor and scale, a bench's scanner (the same list doctor checks)."""
    if cfg is None:
        return []
    from edge_agent.cli.doctor.devices import serial_devices

    out = []
    for path, dev in serial_devices(cfg):
        port = getattr(dev, "port", None)
        if not isinstance(port, str):  # a CAN channel (J1939) or a camera: not a serial port
            continue
        if cfg.profile == "sensors" and hasattr(dev, "unit_id"):
            out.append((port, f"meter {dev.name} ({dev.model_name or 'modbus'}, unit {dev.unit_id})"))
        else:
            out.append((port, f"{path} ({dev.kind})"))
    return out


def cmd_list(args: argparse.Namespace) -> int:
    from edge_agent.cli.probe import probe_port  # the probes load each protocol's parser (pynmea2...)
    from edge_agent.drivers.probing import CANNOT_OPEN

    ports = _ports_to_list(args, _optional_config(args))
    if not ports:
        print("no serial ports found (plug in the adapter, or pass --port URL)")
        return EXIT_OK
    unopened = []
    for entry in ports.values():
        if args.no_probe:
            entry.update(likely=None, baud=None, detail="not probed", error=None)
        else:
            if entry["description"] == "SocketCAN interface":
                entry.update(
                    likely="socketcan", baud=None, detail=_socketcan_bus(entry["port"], args.timeout_s), error=None
                )
                _print_entry(args, entry)
                continue
            r = probe_port(entry["port"], timeout_s=args.timeout_s)
            entry.update(likely=r.protocol, baud=r.baud, detail=r.detail, error=r.error)
            if r.detail == CANNOT_OPEN:
                unopened.append(entry["port"])
            if r.protocol in ("slcan", "elm327"):
                entry["detail"] += "; " + _vehicle_bus(entry["port"], r, args.timeout_s)
        _print_entry(args, entry)
    if args.port and len(unopened) == len(ports):  # only the --port URLs are listed then
        return fail(
            f"none of the ports given with --port could be opened ({', '.join(unopened)}): expected a serial "
            "device, a pty or a pyserial URL; check the path (ls -l /dev/serial/by-id/)",
            EXIT_FAIL,
        )
    return EXIT_OK


def _print_entry(args: argparse.Namespace, entry: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(entry, ensure_ascii=False), flush=True)
        return
    likely = entry["likely"] or "-"
    baud = f"{entry['baud']} baud" if entry["baud"] else ""
    what = entry["error"] or entry["detail"]
    extra = "  [" + entry["configured"] + "]" if entry["configured"] else ""
    desc = f"  ({entry['description']})" if entry["description"] and entry["description"] != "n/a" else ""
    print(f"{entry['port']}{desc}: {likely} {baud} - {what}{extra}", flush=True)


def _socketcan_bus(name: str, timeout_s: float) -> str:
    """Listen on a SocketCAN interface (its bitrate and listen-only mode are the interface's own)."""
    from edge_agent.drivers.j1939.config import J1939Config
    from edge_agent.drivers.j1939.probe import listen

    try:
        heard, any_j1939, _ = listen(J1939Config(kind="j1939", channel=name), max(1.0, timeout_s))
    except Exception as exc:  # noqa: BLE001 - a listing goes on whatever one interface does
        return f"could not listen: {exc}"
    return f"J1939: {heard}" if any_j1939 else f"no J1939 traffic ({heard}; interface down or ignition off?)"


def _vehicle_bus(url: str, r: ProbeResult, timeout_s: float) -> str:
    """What is behind a vehicle-bus adapter: J1939 PGNs, sources and VIN; or which ECU answers which PID."""
    if r.protocol == "slcan":
        from edge_agent.drivers.j1939.config import J1939Config
        from edge_agent.drivers.j1939.probe import listen

        for bitrate in (250_000, 500_000):  # J1939-11 and J1939-14; listening only, nothing is sent on the bus
            cfg = J1939Config(kind="j1939", interface="slcan", channel=url, bitrate=bitrate, sleep_after_open_s=0.1)
            try:
                heard, any_j1939, _ = listen(cfg, max(1.0, timeout_s))
            except Exception as exc:  # noqa: BLE001 - a listing goes on whatever one adapter does
                return f"could not listen: {exc}"
            if any_j1939:
                return f"J1939 at {bitrate // 1000} kbit/s: {heard}"
        return "no J1939 traffic at 250 or 500 kbit/s (ignition off?)"
    from edge_agent.drivers.elm327.config import Elm327Config
    from edge_agent.drivers.elm327.probe import probe

    return probe(Elm327Config(kind="elm327", port=url, baud=r.baud or 38400), max(1.0, timeout_s)).message


# ---------------------------------------------------------------- watch


def _format(reading: MeterReading) -> str:
    values = "  ".join(
        f"{k}={v:g}{(' ' + reading.units[k]) if reading.units.get(k) else ''}"
        for k, v in sorted(reading.values.items())
    )
    return f"{reading.t_utc.strftime('%H:%M:%S')}  {values}"


def cmd_watch(args: argparse.Namespace) -> int:
    cfg = load_or_exit(args)
    meters = {m.name: m for m in cfg.sensors.meters}
    meter = meters.get(args.name)
    if meter is None:
        known = ", ".join(meters) or "none configured"
        return fail(f"{cfg.source}: sensors.meters: no meter named {args.name!r} (meters: {known})", EXIT_CONFIG)
    readings: queue.Queue[MeterReading] = queue.Queue(64)
    stop = threading.Event()

    def on_reading(r: MeterReading) -> None:
        while not stop.is_set():
            try:
                readings.put(r, timeout=0.5)
                return
            except queue.Full:
                continue

    from edge_agent.drivers.modbus.driver import ModbusMeterDriver  # pymodbus: only for this command

    runner = DriverRunner(ModbusMeterDriver(meter), on_reading, stop, backoff_max_s=10.0)
    print(
        f"watching {meter.name} on {meter.port} (unit {meter.unit_id}, {meter.baud} {meter.parity}), "
        f"every {meter.poll_interval_s:g} s; Ctrl-C to stop",
        file=sys.stderr,
    )
    runner.start()
    seen, was_connected, since = 0, False, time.monotonic()
    limit = args.timeout_s if args.timeout_s is not None else 60.0 if args.count > 0 else None
    last_reading = time.monotonic()
    try:
        while args.count <= 0 or seen < args.count:
            try:
                r = readings.get(timeout=0.5)
            except queue.Empty:
                if limit is not None and time.monotonic() - last_reading > limit:
                    why = "connected, but no reading came" if runner.connected else runner.last_error
                    return fail(f"{meter.name}: no reading in {limit:g} s ({why})")
                if runner.connected != was_connected or (not was_connected and time.monotonic() - since > 5):
                    state = "connected" if runner.connected else f"waiting for the meter: {runner.last_error}"
                    print(f"-- {state}", file=sys.stderr, flush=True)
                    was_connected, since = runner.connected, time.monotonic()
                continue
            was_connected, last_reading = True, time.monotonic()
            seen += 1
            if args.json:
                print(
                    json.dumps(
                        {
                            "meter": r.meter,
                            "t": r.t_utc.isoformat(),
                            "values": r.values,
                            "units": r.units,
                            "raw": r.raw,
                        },
                        ensure_ascii=False,
                    ),
                    flush=True,
                )
            else:
                print(_format(r), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        runner.join(3.0)
    print(f"-- {seen} reading(s), {runner.frames_bad} bad poll(s), {runner.reconnects} reconnect(s)", file=sys.stderr)
    return EXIT_OK
