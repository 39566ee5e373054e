"""NMEA 0183 driver: pure parsing, real receiver logs, gpsd's oracle, and the driver on a pty twin."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.drivers.base import DeviceUnavailable, DriverRunner, FrameError
from edge_agent.drivers.nmea.driver import (
    BadChecksum,
    NmeaConfig,
    NmeaDecoder,
    NmeaDriver,
    decode_lines,
    nmea_checksum,
    parse_sentence,
)
from edge_agent.drivers.nmea.twin import Leg, NmeaTwin, drive, epoch_sentences, nmea_line
from edge_agent.drivers.readings import Fix
from edge_agent.drivers.scale.twin import ScaleTwin
from edge_agent.errors import ConfigError
from edge_agent.settings import parse_config
from tests.helpers import wait_until

DATA = Path(__file__).parents[1] / "data" / "nmea"
LOGS = sorted(DATA.glob("*.log"))


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_bytes().decode("ascii", "replace").splitlines() if not ln.startswith("#")]


# ---------------------------------------------------------------- pure parsing


def test_nmea_checksum__matches_what_a_real_receiver_sent() -> None:
    # The first GSA of bu353s4.log (SiRF-IV): the receiver computed 33 itself.
    line = "$GPGSA,A,3,17,28,06,01,30,20,26,13,,,,,1.8,1.1,1.5*33"
    assert line in _lines(DATA / "bu353s4.log")
    body, given_cs = line[1:].split("*")
    assert nmea_checksum(body) == int(given_cs, 16)


def test_parse_sentence__rmc_fields_from_a_real_log() -> None:
    rmc = next(ln for ln in _lines(DATA / "bu353s4.log") if ln.startswith("$GPRMC"))
    s = parse_sentence(rmc)
    fields = rmc.split("*")[0].split(",")
    assert s.kind == "RMC" and s.talker == "GP" and s.valid is True
    lat = int(fields[3][:2]) + float(fields[3][2:]) / 60
    assert s.lat == pytest.approx(-lat if fields[4] == "S" else lat, abs=1e-9)
    assert s.speed_kmh == pytest.approx(float(fields[7]) * 1.852)
    assert s.day is not None and s.day.strftime("%d%m%y") == fields[9]


def test_parse_sentence__bad_checksum_is_a_frame_error() -> None:
    with pytest.raises(BadChecksum, match="checksum mismatch"):
        parse_sentence("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*00")


def test_parse_sentence__garbage_says_what_was_expected() -> None:
    with pytest.raises(FrameError, match="expected '\\$' first"):
        parse_sentence("GPGGA,123519")
    with pytest.raises(FrameError, match="expected 2 hex digits"):
        parse_sentence("$GPGGA,123519*Z")


@pytest.mark.parametrize("talker", ["GP", "GN", "GL", "GA", "GB", "BD", "GQ"])
def test_parse_sentence__every_talker(talker: str) -> None:
    t = datetime(2025, 3, 1, 8, 30, 5, tzinfo=UTC)
    dec = NmeaDecoder()
    for line in epoch_sentences(t, 31.2304, 121.4737, 36.0, 90.0, talker=talker):
        dec.feed_line(line.decode())
    fix = dec.flush()
    assert fix is not None and fix.valid and fix.t_utc == t
    assert fix.lat == pytest.approx(31.2304, abs=2e-6) and fix.lon == pytest.approx(121.4737, abs=2e-6)
    assert fix.speed_kmh == pytest.approx(36.0, abs=0.01) and fix.satellites == 9 and fix.hdop == 0.9
    assert dec.stats.by_talker == {talker: 4}


def test_parse_sentence__empty_fields_are_none_not_zero() -> None:
    s = parse_sentence(nmea_line("GNRMC,,V,,,,,,,,,,N").decode())
    assert s.lat is None and s.lon is None and s.valid is False and s.tod is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_decoder__no_byte_string_crashes(data: bytes) -> None:
    dec = NmeaDecoder()
    for raw in data.split(b"\n"):
        with contextlib.suppress(FrameError):
            dec.feed_line(raw.decode("latin-1"))
    dec.flush()


_field = st.text(alphabet="0123456789.,-ENSWAVMK", max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["GPRMC", "GNGGA", "GPGLL", "GPVTG", "GNGSA", "GPGSV", "GPZDA", "GNGNS"]),
    st.lists(_field, max_size=20),
)
def test_decoder__checksummed_nonsense_fields_never_crash(head: str, fields: list[str]) -> None:
    # A valid checksum gets random fields past the framing into the value conversions.
    line = nmea_line(",".join([head, *fields])).decode().strip()
    dec = NmeaDecoder()
    with contextlib.suppress(FrameError):
        dec.feed_line(line)
    fix = dec.flush()
    if fix is not None:
        assert -90 <= fix.lat <= 90 and -180 <= fix.lon <= 180


# ---------------------------------------------------------------- real logs


@pytest.mark.parametrize("path", LOGS, ids=[p.name for p in LOGS])
def test_decode_lines__every_real_log_without_exception(path: Path) -> None:
    dec = NmeaDecoder()
    fixes = decode_lines(_lines(path), dec)
    assert dec.stats.sentences > 0
    for f in fixes:
        assert f.t_utc.tzinfo is not None and -90 <= f.lat <= 90 and -180 <= f.lon <= 180


def test_decode_lines__counts_bad_checksums_of_real_receivers() -> None:
    # firefly-II sends every GGA with a wrong checksum; com-1289 has one corrupted GSV.
    for name, bad in (("firefly-II.log", 23), ("com-1289.log", 1)):
        dec = NmeaDecoder()
        decode_lines(_lines(DATA / name), dec)
        assert dec.stats.bad_checksum == bad, name


def test_decode_lines__fix_validity_and_quality_from_real_logs() -> None:
    # Garmin in simulator mode: status V throughout.
    assert not any(f.valid for f in decode_lines(_lines(DATA / "GPSmap-76S.log")))
    rtk = decode_lines(_lines(DATA / "nmea-rtk.log"))
    assert {f.fix_quality for f in rtk} == {2, 4}  # DGPS and RTK fixed, as its GGA fields say
    multi = decode_lines(_lines(DATA / "ublox-neo-m9n-nmea.log"))
    assert all(f.satellites and f.satellites >= 4 for f in multi) and all(f.hdop for f in multi)


@pytest.mark.parametrize("name", ["bu353s4.log", "nmea-rtk.log", "nl2008u.log"])
def test_decode_lines__agrees_with_gpsd_oracle(name: str) -> None:
    oracle = {}
    for line in (DATA / f"{name}.chk").read_text().splitlines():
        if not line.startswith("{"):
            continue
        rep = json.loads(line)
        if rep.get("class") == "TPV" and rep.get("mode", 0) >= 2 and "time" in rep and "lat" in rep:
            oracle[datetime.fromisoformat(rep["time"].replace("Z", "+00:00"))] = (rep["lat"], rep["lon"])
    fixes = {f.t_utc: f for f in decode_lines(_lines(DATA / name)) if f.valid}
    common = set(oracle) & set(fixes)
    assert len(common) >= 0.8 * len(oracle) > 0
    for t in common:
        assert fixes[t].lat == pytest.approx(oracle[t][0], abs=1e-7)
        assert fixes[t].lon == pytest.approx(oracle[t][1], abs=1e-7)


# ---------------------------------------------------------------- config


def test_nmea_config__bad_values_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"telematics\.gps\.baud: expected a baud rate"):
        parse_config(
            {
                "profile": "truck",
                "device": {"id": "t1", "site": "s"},
                "telematics": {"gps": {"kind": "nmea", "port": "/dev/ttyACM0", "baud": 12}},
            }
        )


# ---------------------------------------------------------------- the driver on a pty twin


class _Collector:
    def __init__(self) -> None:
        self.fixes: list[Fix] = []
        self.got = threading.Event()

    def __call__(self, fix: Fix) -> None:
        self.fixes.append(fix)
        self.got.set()

    def wait_for(self, n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.fixes) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return len(self.fixes) >= n


def _run(twin: NmeaTwin, **cfg: object) -> tuple[DriverRunner[Fix], _Collector, threading.Event, NmeaDriver]:
    driver = NmeaDriver(NmeaConfig(kind="nmea", port=twin.path, **cfg))  # type: ignore[arg-type]
    sink, stop = _Collector(), threading.Event()
    runner = DriverRunner(driver, sink, stop, backoff_min_s=0.05, backoff_max_s=0.2, read_timeout_s=0.3)
    runner.start()
    return runner, sink, stop, driver


START = datetime(2025, 6, 1, 2, 0, 0, tzinfo=UTC)
# A receiver does not wait for its reader: pyserial flushes what was sent before open(), so the
# drive starts with a parked lead-in and the checks match fixes by their time.
LEGS = [Leg(20, 0, 90), Leg(40, 54.0, 90), Leg(3, 0, 90)]


def test_driver__reads_a_scenario_drive_from_the_twin(tmp_path: Path) -> None:
    expected = {e[0]: e for e in drive(LEGS, 39.9, 116.4, START)}
    with NmeaTwin(tmp_path / "gps", legs=LEGS, start_lat=39.9, start_lon=116.4, start_t=START, speedup=20) as twin:
        runner, sink, stop, _ = _run(twin)
        try:
            assert sink.wait_for(44, 10)
            # the last epoch is handed on once the line goes quiet, not at a next epoch that never comes
            assert wait_until(lambda: twin.done and sink.fixes and sink.fixes[-1].t_utc == max(expected), 10)
        finally:
            stop.set()
            runner.join()
    got = [f.t_utc for f in sink.fixes]
    assert got == sorted(got) and len(set(got)) == len(got)
    assert max(got) == max(expected), "the last epoch was not handed on when the line went quiet"
    for i, f in enumerate(sink.fixes):
        _, lat, lon, v, _c = expected[f.t_utc]
        assert f.lat == pytest.approx(lat, abs=2e-6) and f.lon == pytest.approx(lon, abs=2e-6)
        if i == 0 and "RMC" not in f.raw and "VTG" not in f.raw:
            # The port opened in the middle of the first burst (on a busy host): its RMC and VTG were sent
            # before open() and flushed, so that epoch has a position and no speed. Only the first can.
            assert f.speed_kmh is None
            continue
        assert f.speed_kmh == pytest.approx(v, abs=0.01)


def test_decoder__an_epoch_split_before_its_speed_is_not_complete() -> None:
    """A busy host can split an epoch's burst after GGA: the driver then waits for RMC/VTG before handing it
    on (a loaded soak run got a fix with no speed)."""
    dec = NmeaDecoder()
    for line in epoch_sentences(START, 39.9, 116.4, 36.0, 90.0):  # a first epoch, which gives the date
        dec.feed_line(line.decode().strip())
    later = epoch_sentences(START.replace(second=1), 39.9, 116.4, 36.0, 90.0)
    gga2 = next(x for x in later if b"GGA" in x)
    rmc2 = next(x for x in later if b"RMC" in x)
    assert dec.feed_line(gga2.decode().strip()) is not None  # the first epoch, complete
    assert not dec.open_has_motion()
    dec.feed_line(rmc2.decode().strip())
    assert dec.open_has_motion()
    fix = dec.flush()
    assert fix is not None and fix.speed_kmh == pytest.approx(36.0, abs=0.01)


@pytest.mark.parametrize("order", ["RMC first", "GGA first", "GGA only after one RMC"])
def test_decoder__fixes_keep_their_date_across_midnight_utc(order: str) -> None:
    """Every truck in China crosses midnight UTC at 08:00 local time. The date of the first RMC after
    midnight used to be given to the last epoch before it, and then rolled on once more: 23:59:59 came
    out a day ahead, and the trip ended there as a gap of 24 h (the J1939 demo run at 23:48 UTC)."""
    from datetime import timedelta

    t0 = datetime(2026, 11, 30, 23, 59, 57, tzinfo=UTC)
    dec = NmeaDecoder()
    fixes = []
    for k in range(6):
        lines = epoch_sentences(t0 + timedelta(seconds=k), 39.9, 116.4, 36.0, 90.0)
        if order == "GGA first":
            lines = sorted(lines, key=lambda x: b"GGA" not in x)
        elif order == "GGA only after one RMC" and k > 0:
            lines = [x for x in lines if b"GGA" in x]
        for line in lines:
            fix = dec.feed_line(line.decode().strip())
            if fix is not None:
                fixes.append(fix.t_utc)
    last = dec.flush()
    assert last is not None
    assert [*fixes, last.t_utc] == [t0 + timedelta(seconds=k) for k in range(6)]


def test_decoder__a_receiver_that_gave_a_speed_is_expected_to_give_it_again() -> None:
    """An epoch without its speed is only handed on by a quiet line when the receiver gives no speed (GGA-only):
    one that gave RMC/VTG last epoch waits for it however long a busy host holds the rest of the burst."""
    dec = NmeaDecoder()
    assert dec.sends_speed()  # until an epoch closed, assume it does
    for line in epoch_sentences(START, 39.9, 116.4, 36.0, 90.0):
        dec.feed_line(line.decode().strip())
    later = epoch_sentences(START.replace(second=1), 39.9, 116.4, 36.0, 90.0)
    assert dec.feed_line(next(x for x in later if b"GGA" in x).decode().strip()) is not None
    assert dec.sends_speed() and not dec.open_has_motion()
    gga_only = NmeaDecoder()
    for sec in (0, 1):
        for line in epoch_sentences(START.replace(second=sec), 39.9, 116.4, 36.0, 90.0):
            if b"GGA" in line:
                gga_only.feed_line(line.decode().strip())
    assert not gga_only.sends_speed()


def test_driver__survives_unplug_and_replug(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    legs = [Leg(600, 36.0, 0)]
    caplog.set_level(logging.INFO, logger="edge_agent.drivers.base")
    with NmeaTwin(tmp_path / "gps", legs=legs, start_t=START, speedup=20) as twin:
        runner, sink, stop, _ = _run(twin)
        try:
            assert sink.wait_for(5, 5)
            twin.unplug()
            assert wait_until(lambda: not runner.connected, 10), "the unplug was not noticed"
            n_unplugged = len(sink.fixes)
            twin.replug()
            assert sink.wait_for(n_unplugged + 5, 10), "no fixes after replug"
        finally:
            stop.set()
            runner.join()
    assert runner.reconnects >= 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "lost" in warnings[0].getMessage()
    assert any("back after" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    times = [f.t_utc for f in sink.fixes]
    assert times == sorted(times)


def test_driver__garbage_and_truncated_lines_are_counted_and_dropped(tmp_path: Path) -> None:
    with NmeaTwin(tmp_path / "gps", legs=[Leg(30, 20.0, 45)], start_t=START, speedup=50, garbage_every=2) as twin:
        runner, sink, stop, driver = _run(twin)
        try:
            assert sink.wait_for(20, 10)
            # A sentence cut short and glued to the next one (a lost CR LF).
            twin.write(b"$GNGGA,0200")
        finally:
            stop.set()
            runner.join()
    assert runner.frames_bad >= 5 and driver.stats.bad_frames + driver.stats.bad_checksum >= 5
    assert all(f.valid for f in sink.fixes), [f.raw for f in sink.fixes if not f.valid]


def test_driver__a_port_that_never_sends_nmea_is_not_connected(tmp_path: Path) -> None:
    # A KERN scale's real output on the port set for the GPS (as a receiver at another baud rate, it talks
    # but never says a sentence): the driver gives up on the connection and says why, rather than
    # staying 'connected' forever with no fix.
    kern = Path(__file__).parents[1] / "data" / "scale" / "kern_ew_6200-2nm_26_9g_stable.bin"
    with ScaleTwin(tmp_path / "gps", replay=kern, interval_s=0.05) as twin:
        runner, sink, stop, _ = _run(twin, silence_timeout_s=1.0)
        try:
            assert wait_until(lambda: runner.reconnects >= 1, 10), runner.last_error
        finally:
            stop.set()
            runner.join()
    assert not sink.fixes
    assert runner.last_error is not None
    assert "no valid NMEA sentence for 1 s at 9600 baud" in runner.last_error, runner.last_error
    assert "autobaud = true" in runner.last_error


def test_driver__replays_a_real_log_with_times_rewritten_to_now(tmp_path: Path) -> None:
    log = DATA / "bu353s4.log"
    before = datetime.now(UTC)
    with NmeaTwin(tmp_path / "gps", log=log, lines_per_s=400, rewrite_time=True, loop=True) as twin:
        runner, sink, stop, _ = _run(twin, autobaud=True)
        try:
            assert sink.wait_for(20, 10)
        finally:
            stop.set()
            runner.join()
    offline = decode_lines(_lines(log))
    assert abs((sink.fixes[0].t_utc - before).total_seconds()) < 120
    assert {(f.lat, f.lon) for f in sink.fixes} <= {(f.lat, f.lon) for f in offline}


def test_driver__missing_port_is_device_unavailable(tmp_path: Path) -> None:
    driver = NmeaDriver(NmeaConfig(kind="nmea", port=str(tmp_path / "nothing")))
    with pytest.raises(DeviceUnavailable, match="cannot open"):
        driver.open()
    driver.close()
    driver.close()
