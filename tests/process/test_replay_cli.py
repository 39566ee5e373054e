"""`edge-agent telematics replay` on input that is not what it expects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parents[1] / "data"
NMEA = DATA / "nmea" / "nl2008u.log"


def _replay(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "telematics", "replay", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _summary(r: subprocess.CompletedProcess[str]) -> dict[str, object]:
    last: dict[str, object] = json.loads(r.stdout.splitlines()[-1])
    assert last["type"] == "summary", r.stdout
    return last


def test_replay__a_file_that_is_not_nmea_fails_and_says_so(tmp_path: Path) -> None:
    log = tmp_path / "notes.txt"
    log.write_text("delivery notes\nno GNSS here\n", encoding="utf-8")
    r = _replay(log)
    assert r.returncode == 1
    assert "no NMEA sentence found" in r.stderr and str(log) in r.stderr
    assert "Traceback" not in r.stderr


def test_replay__side_frames_without_a_time_that_start_with_a_number_are_read(tmp_path: Path) -> None:
    # A KERN line ('+0026.90 G S', a real recording) and an ELM327 answer ('41 5E 01 90', the help's example)
    # both start with a number; without a time in front they are frames, not a time and a broken frame.
    fuel = tmp_path / "fuel.txt"
    fuel.write_text("41 5E 01 90\n41 2F 80\n", encoding="ascii")
    kern = DATA / "scale" / "kern_ew_6200-2nm_26_9g_stable.bin"
    r = _replay("--json", "--fuel", fuel, "--weight", kern, NMEA)
    assert r.returncode == 0, r.stderr
    s = _summary(r)
    assert (s["fuel_bad_lines"], s["weight_bad_lines"]) == (0, 0)


def test_replay__a_fuel_or_weight_file_without_one_reading_fails_and_names_the_format(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    csv = DATA / "obd" / "ufpe3.csv"  # decoded OBD columns, not ELM327 answers
    png = DATA / "barcodes" / "code128-1_3.png"  # binary
    cases = [
        ("--fuel", csv, "none of its 809 line(s) is a fuel reading", "'41 5E 01 90'"),
        ("--fuel", empty, "no line in it", "'41 5E 01 90'"),
        ("--weight", csv, "none of its 809 line(s) is a scale reading", "'+0026.90 G S'"),
        ("--weight", png, "is a scale reading", "'+0026.90 G S'"),
        ("--weight", empty, "no line in it", "'+0026.90 G S'"),
    ]
    for option, path, found, example in cases:
        for json_flag in ([], ["--json"]):
            r = _replay(*json_flag, option, path, NMEA)
            assert r.returncode == 1, (option, path, r.stdout)
            assert r.stderr.count("\n") == 1 and f"{path}: " in r.stderr, r.stderr
            assert found in r.stderr and example in r.stderr, r.stderr


def test_replay__bad_fuel_and_weight_lines_are_counted_in_the_text_summary(tmp_path: Path) -> None:
    weight = tmp_path / "weight.txt"
    kern = (DATA / "scale" / "kern_ew_6200-2nm_26_9g_stable.bin").read_bytes()
    weight.write_bytes(kern + b"not a weight\n" + kern + b"\x00\xff\n")
    fuel = tmp_path / "fuel.txt"
    fuel.write_text("0 41 5E 01 90\n1 41 0D 20\n", encoding="ascii")  # 0D: speed, not a fuel PID
    r = _replay("--fuel", fuel, "--weight", weight, NMEA)
    assert r.returncode == 0, r.stderr
    assert "  fuel_bad_lines    1\n" in r.stdout and "  weight_bad_lines  2\n" in r.stdout, r.stdout


def test_replay__an_empty_nmea_log_fails_like_a_file_that_is_not_nmea(tmp_path: Path) -> None:
    # An empty file given by hand is far more likely the wrong file than a drive (a drive has sentences).
    for content in (b"", b"\n\r\n  \n"):
        log = tmp_path / "empty.log"
        log.write_bytes(content)
        for json_flag in ([], ["--json"]):
            r = _replay(*json_flag, log)
            assert r.returncode == 1 and r.stdout == "", r.stdout
            assert f"{log}: empty file, no NMEA sentence found" in r.stderr and "is this an NMEA log?" in r.stderr


# The replay's own peak resident memory (VmHWM: ru_maxrss of a child would count this test's memory, which
# a vfork'ed child's exec inherits), printed by the child after the command returned 0.
PEAK_RSS = """
import sys
from edge_agent.cli.main import main
assert main() == 0
print(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1])
"""


def _peak_rss_kb(*args: str | Path) -> int:
    r = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, "telematics", "replay", "--json", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return int(r.stdout.splitlines()[-1])


def test_replay__a_long_log_is_replayed_in_the_memory_of_a_short_one(tmp_path: Path) -> None:
    # A receiver's real log 125 times over (10 MB; a week's drive is hundreds): it was read whole, split into
    # lines and every fix kept before the first was replayed, 3.5 times its size on top of a short log's.
    real = DATA / "nmea" / "ublox-neo-m9n-nmea.log"
    long_log = tmp_path / "week.log"
    long_log.write_bytes(real.read_bytes() * 125)
    size_kb = long_log.stat().st_size // 1024
    short_kb, long_kb = _peak_rss_kb(real), _peak_rss_kb(long_log)
    assert long_kb - short_kb < size_kb // 2, (short_kb, long_kb, size_kb)
