"""Config: every error names file, dotted key, expected and got; `config set` keeps comments."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.cli.main import main, render_config
from edge_agent.errors import ConfigError
from edge_agent.settings import load_config, resolve_config_path, set_value


def write_config(tmp_path: Path, extra: str = "", profile: str = "truck") -> Path:
    p = tmp_path / "config.toml"
    p.write_text(render_config(profile, "dev-1", "site-a", "mqtt://127.0.0.1:1883", tmp_path / "state") + extra)
    return p


@pytest.mark.parametrize("profile", ["bench", "truck", "sensors"])
def test_templates__every_profile_validates(tmp_path: Path, profile: str) -> None:
    cfg = load_config(write_config(tmp_path, profile=profile))
    assert cfg.profile == profile
    assert cfg.device.id == "dev-1"


BASE = 'profile = "truck"\n[device]\nid = "d"\nsite = "s"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            BASE + '[mqtt]\nurl = "mqtt://h:88x3"\n',
            'mqtt.url: expected mqtt://host:port or mqtts://host:port, got "mqtt://h:88x3"',
        ),
        (BASE + '[mqtt]\nkeepalive_s = "88x3"\n', 'mqtt.keepalive_s: expected an integer 5-3600, got "88x3"'),
        (BASE + "[mqtt]\nport = 1883\n", "mqtt.port: unknown key"),
        (
            BASE + '[health]\ninterval_s = "often"\n',
            'health.interval_s: expected a number of seconds >= 0, got "often"',
        ),
        ('profile = "truck"\n[device]\nid = "a/b"\nsite = "s"\n', "device.id: expected 1-64 letters"),
        (
            'profile = "boat"\n[device]\nid = "a"\nsite = "s"\n',
            'profile: expected "bench", "truck" or "sensors", got "boat"',
        ),
        ('profile = "truck"\n[device]\nsite = "s"\n', "device.id: required key is missing"),
        ("this is = = not toml", "not valid TOML"),
        # TOML has inf and nan; a lower bound alone let inf through (min_trip_s = inf never ends a trip)
        (BASE + "[telematics.trips]\nmin_trip_s = inf\n", "telematics.trips.min_trip_s: expected a number of seconds"),
        (BASE + "[health]\ninterval_s = inf\n", "health.interval_s: expected a number of seconds >= 0, got inf"),
        (
            BASE + "[telematics.cleaning]\nrefuel_min_l = nan\n",
            "telematics.cleaning.refuel_min_l: expected litres > 0, got nan",
        ),
    ],
)
def test_config_check__error_names_file_key_expected_got(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "config.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert any(line.startswith(f"{p}: {message}") for line in exc.value.problems), exc.value.problems
    assert all(line.startswith(str(p)) for line in exc.value.problems)


def test_config_check__cli_exit_codes_and_no_traceback(tmp_path: Path) -> None:
    good = write_config(tmp_path)
    env = {**os.environ, "EDGE_AGENT_CONFIG": str(good)}
    r = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "config", "check"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    good.write_text(good.read_text().replace("keepalive_s = 30", 'keepalive_s = "x"'))
    r = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "config", "check"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert f'{good}: mqtt.keepalive_s: expected an integer 5-3600, got "x"' in r.stderr


def test_config_check__a_fresh_bench_needs_its_camera_before_run_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`init --profile bench` writes the camera commented out. `config check` and doctor passed that, and `run`
    then exited on it (under systemd, a restart loop): both now say what `run` would."""
    from edge_agent.cli.doctor import FAIL, run_checks

    path = write_config(tmp_path, profile="bench")
    assert main(["config", "check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: bench.camera: expected a [bench.camera] section" in err and "uncomment the one" in err
    # the default trigger wants a scanner too: said at once, not after the camera is fixed
    assert f"{path}: bench.scanner: expected a [bench.scanner] section" in err
    checks = {c.name: c for c in run_checks(path, root=tmp_path, listen_s=0.1)}
    assert checks["config"].status == FAIL and "bench.camera" in checks["config"].message
    assert "disk" in checks, "the other checks still run on a config that is valid"
    path.write_text(path.read_text() + f'\n[bench.camera]\nkind = "folder"\npath = "{tmp_path}"\n')
    assert main(["config", "check", "--config", str(path)]) == 2  # still the scanner
    assert "bench.scanner: expected a [bench.scanner] section" in capsys.readouterr().err
    path.write_text(path.read_text().replace('mode = "scan-then-capture"', 'mode = "manual"'))
    assert main(["config", "check", "--config", str(path)]) == 0, capsys.readouterr().err


def test_config_check__a_manifest_path_to_no_file_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`config check` said ok to a bench.validation.manifest with no file there. `run` starts without it (every
    slip to review), so check says so as a warning and exits 0; a manifest central sent makes the file moot."""
    path = write_config(tmp_path, profile="bench")
    path.write_text(
        path.read_text().replace('mode = "scan-then-capture"', 'mode = "manual"')
        + f'\n[bench.camera]\nkind = "folder"\npath = "{tmp_path}"\n'
    )
    assert main(["config", "set", "--config", str(path), "bench.validation.manifest", "retruns.csv"]) == 0
    capsys.readouterr()
    assert main(["config", "check", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err.startswith(f"{path}: warning: bench.validation.manifest: {tmp_path / 'retruns.csv'}: no such file"), err
    assert "every slip to review" in err and "fix the path" in err
    assert out == f"{path}: ok (1 warning)\n"
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "manifest.csv").write_text("order_no,sku,quantity\nDD2001,SKU-C3,1\n")
    assert main(["config", "check", "--config", str(path)]) == 0
    assert capsys.readouterr() == (f"{path}: ok\n", "")


def test_config_check__the_mqtt_files_run_needs_are_checked_as_run_opens_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`config check` said ok to a password file or CA file that is not there, and `run` then exited on it."""
    path = write_config(tmp_path)
    assert main(["config", "set", "--config", str(path), "mqtt.username", "truck"]) == 0
    assert main(["config", "set", "--config", str(path), "mqtt.password_file", str(tmp_path / "nope")]) == 0
    capsys.readouterr()
    assert main(["config", "check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: mqtt.password_file: {tmp_path / 'nope'}: cannot read (No such file or directory)" in err
    (tmp_path / "nope").write_text("secret\n")
    assert main(["config", "set", "--config", str(path), "mqtt.url", "mqtts://127.0.0.1:8883"]) == 0
    assert main(["config", "set", "--config", str(path), "mqtt.ca_file", str(tmp_path / "ca.pem")]) == 0
    capsys.readouterr()
    assert main(["config", "check", "--config", str(path)]) == 2
    assert f"{path}: mqtt.ca_file: {tmp_path / 'ca.pem'} not found" in capsys.readouterr().err


def test_config_check__a_state_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    (tmp_path / "state").write_text("not a folder")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.problems == [f"{path}: state_dir: expected a folder, got a file ({tmp_path / 'state'})"]


def test_config_path__cli_then_env_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_CONFIG", "/x/env.toml")
    assert resolve_config_path("/x/cli.toml") == Path("/x/cli.toml")
    assert resolve_config_path(None) == Path("/x/env.toml")
    monkeypatch.delenv("EDGE_AGENT_CONFIG")
    assert resolve_config_path(None) == Path("/etc/edge-agent/config.toml")


def test_config_set__keeps_comments_validates_and_is_atomic(tmp_path: Path) -> None:
    p = write_config(tmp_path)
    before = p.read_text()
    set_value(p, "mqtt.url", "mqtts://broker.example:8883")
    after = p.read_text()
    assert 'url = "mqtts://broker.example:8883"' in after
    assert "# mqtt://host:port, or mqtts://host:port for TLS" in after
    assert load_config(p).mqtt.port == 8883
    with pytest.raises(ConfigError, match=r"mqtt\.keepalive_s: expected an integer 5-3600"):
        set_value(p, "mqtt.keepalive_s", "2")
    assert p.read_text() == after != before
    set_value(p, "health.interval_s", "0.5")
    assert load_config(p).health.interval_s == 0.5


METERS = """
[[sensors.meters]]
kind = "modbus"
name = "main-board"  # the incomer
port = "/dev/ttyUSB0"
map = "eastron-sdm120"
baud = 9600
unit_id = 1

[[sensors.meters]]
kind = "modbus"
name = "cold-room-1"
port = "/dev/ttyUSB0"
map = "xy-md02"
unit_id = 2
"""


def test_config_set__a_meter_of_the_list_by_its_name_or_index(tmp_path: Path) -> None:
    """`config set sensors.meters.0.port` said the meters were "a table"; a technician had to edit by hand."""
    p = write_config(tmp_path, METERS, profile="sensors")
    set_value(p, "sensors.meters.cold-room-1.poll_interval_s", "60")
    set_value(p, "sensors.meters.0.port", "/dev/ttyUSB3")
    set_value(p, "sensors.meters.1.port", "/dev/ttyUSB3")  # one RS-485 line: same port, other unit_id
    meters = {m.name: m for m in load_config(p).sensors.meters}
    assert meters["cold-room-1"].poll_interval_s == 60.0
    assert meters["main-board"].port == meters["cold-room-1"].port == "/dev/ttyUSB3"
    text = p.read_text()
    assert 'name = "main-board"  # the incomer' in text and text.splitlines().count("[[sensors.meters]]") == 2
    with pytest.raises(
        ConfigError,
        match=r"sensors\.meters has no table named 'chiller' \(names: main-board, "
        r"cold-room-1; or an index 0-1\); a new one is added by editing the file",
    ):
        set_value(p, "sensors.meters.chiller.port", "/dev/ttyUSB1")
    with pytest.raises(
        ConfigError,
        match=r"sensors\.meters is a list of tables: name one, e\.g\. "
        r"sensors\.meters\.NAME\.port",
    ):
        set_value(p, "sensors.meters.port", "/dev/ttyUSB1")
    with pytest.raises(ConfigError, match=r"sensors\.meters: .*unit_id"):  # validated as a whole, as ever
        set_value(p, "sensors.meters.main-board.unit_id", "2")
    # a bad value is named by the meter's name, as set takes it, whether it was addressed by name or index
    for key in ("sensors.meters.cold-room-1.unit_id", "sensors.meters.1.unit_id"):
        with pytest.raises(ConfigError) as info:
            set_value(p, key, "999")
        assert f"{p}: sensors.meters.cold-room-1.unit_id: expected a Modbus unit" in str(info.value)
    assert p.read_text() == text


def test_config_check__a_list_item_without_a_name_of_its_own_is_named_by_its_index(tmp_path: Path) -> None:
    """Two meters with one name cannot be told apart by it: the error keeps the index."""
    twins = METERS.replace('name = "cold-room-1"', 'name = "main-board"').replace("unit_id = 2", "unit_id = 999")
    p = write_config(tmp_path, twins, profile="sensors")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert any(line.startswith(f"{p}: sensors.meters.1.unit_id: expected") for line in info.value.problems)


def test_config_show__masks_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write_config(tmp_path)
    p.write_text(p.read_text().replace('protocol = "5"', 'protocol = "5"\nusername = "u"\npassword = "hunter2"'))
    assert main(["config", "show", "--config", str(p)]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert "********" in out


def test_init__writes_config_key_and_refuses_second_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "etc"
    rc = main(["init", "--profile", "truck", "--device-id", "truck-7", "--site", "bj", "--dir", str(d)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "truck-7" in out and "ed25519:" in out
    cfg = load_config(d / "config.toml")
    assert cfg.key_path.stat().st_mode & 0o777 == 0o600
    assert main(["init", "--profile", "truck", "--device-id", "truck-7", "--site", "bj", "--dir", str(d)]) == 1
    assert main(["keys", "export-public", "--config", str(d / "config.toml")]) == 0
    assert "BEGIN PUBLIC KEY" in capsys.readouterr().out


def test_init__force_with_another_device_id_on_a_used_state_dir_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """init --force --device-id NEW kept the state dir, whose outbox the new id would continue from the old head."""
    from edge_agent.spine.clock import Clock
    from edge_agent.spine.keys import load_key
    from edge_agent.spine.outbox import Outbox

    d = tmp_path / "etc"
    assert main(["init", "--profile", "sensors", "--device-id", "m1", "--site", "w", "--dir", str(d)]) == 0
    cfg = load_config(d / "config.toml")
    ob, _ = Outbox.open_checked(cfg.db_path)
    ob.append([("event", {"i": 1})], device="m1", key=load_key(cfg.key_path), clock=Clock(), max_bytes=1 << 30)
    ob.close()
    before = (d / "config.toml").read_bytes()
    capsys.readouterr()
    rc = main(["init", "--force", "--profile", "sensors", "--device-id", "m2", "--site", "w", "--dir", str(d)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "holds the chain of device 'm1' (up to seq 1), not of 'm2'" in err and "init --state-dir" in err
    assert (d / "config.toml").read_bytes() == before
    assert main(["init", "--force", "--profile", "sensors", "--device-id", "m1", "--site", "w", "--dir", str(d)]) == 0


def test_init__bad_folders_and_options_are_named_and_nothing_is_left_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file where a folder goes was a traceback, and left a config.toml that needed --force to redo; a bad
    --broker was reported against a config.toml that was never written."""
    afile = tmp_path / "afile"
    afile.write_text("")
    base = ["init", "--profile", "truck", "--device-id", "t1", "--site", "bj"]
    assert main([*base, "--dir", str(afile)]) == 2
    assert f"--dir {afile}: expected a folder, got a file" in capsys.readouterr().err
    assert main([*base, "--dir", str(tmp_path / "etc"), "--state-dir", str(afile)]) == 2
    assert (
        f"edge-agent init: --state-dir (state_dir): expected a folder, got a file ({afile})" in capsys.readouterr().err
    )
    assert main([*base, "--dir", str(tmp_path / "etc"), "--broker", "http://x:1"]) == 2
    err = capsys.readouterr().err
    assert (
        'edge-agent init: --broker (mqtt.url): expected mqtt://host:port or mqtts://host:port, got "http://x:1"' in err
    )
    assert main([*base, "--dir", str(afile / "etc")]) == 1
    assert "cannot create it (Not a directory)" in capsys.readouterr().err
    assert not (tmp_path / "etc").exists(), "nothing written for a device that cannot run"


def test_config__relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "ca.pem").write_text("x")
    p = etc / "config.toml"
    p.write_text(
        'profile = "truck"\nstate_dir = "state"\n[device]\nid = "d"\nsite = "s"\n'
        '[mqtt]\nurl = "mqtts://h:8883"\nca_file = "ca.pem"\n'
    )
    cfg = load_config(p)
    assert cfg.state_dir == etc.resolve() / "state"
    assert cfg.mqtt.ca_file == etc.resolve() / "ca.pem"


def test_config__union_sections_name_the_key_without_the_tag(tmp_path: Path) -> None:
    p = tmp_path / "config.toml"
    p.write_text(
        'profile = "bench"\n[device]\nid = "d"\nsite = "s"\n'
        '[bench.camera]\nkind = "opencv"\nsource = "rtsp://u:pw@cam/1"\nwidth = "wide"\n'
    )
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert any(line.startswith(f"{p}: bench.camera.width: expected") for line in exc.value.problems), exc.value.problems


def test_config_set__digits_for_a_key_that_takes_text_are_kept_as_text(tmp_path: Path) -> None:
    """`config set mqtt.protocol 5` said: expected "5" or "3.1.1", got 5 (the digits were read as a number)."""
    p = tmp_path / "config.toml"
    p.write_text('profile = "sensors"\n[device]\nid = "d"\nsite = "s"\n[mqtt]\nprotocol = "3.1.1"\n')
    assert main(["config", "set", "--config", str(p), "mqtt.protocol", "5"]) == 0
    assert main(["config", "set", "--config", str(p), "device.id", "1042"]) == 0
    assert main(["config", "set", "--config", str(p), "health.interval_s", "30"]) == 0
    cfg = load_config(p)
    assert (cfg.mqtt.protocol, cfg.device.id, cfg.health.interval_s) == ("5", "1042", 30)
    assert 'protocol = "5"' in p.read_text()
    assert main(["config", "set", "--config", str(p), "health.interval_s", "-1"]) == 2  # still refused


def test_config_show__masks_credentials_in_urls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "config.toml"
    p.write_text(
        'profile = "bench"\n[device]\nid = "d"\nsite = "s"\n'
        '[bench.camera]\nkind = "opencv"\nsource = "rtsp://admin:s3cret@10.0.0.5/stream1"\n'
        '[bench.trigger]\nmode = "still"\n'
    )
    assert main(["config", "show", "--config", str(p)]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out
    assert "rtsp://admin:********@10.0.0.5/stream1" in out


def _sensors_config(tmp_path: Path, mqtt: str) -> Path:
    """A minimal sensors config whose [mqtt] section holds `mqtt` (TOML lines)."""
    p = tmp_path / "config.toml"
    p.write_text('profile = "sensors"\n[device]\nid = "d"\nsite = "s"\n[mqtt]\n' + mqtt)
    return p


def test_config_show__masks_a_password_holding_at_signs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """mqtt://admin:p@ss@word@host: the password runs to the last '@' (issue 9, defect 12)."""
    p = _sensors_config(tmp_path, 'url = "mqtts://admin:p@ss@word@broker.example:8883"\n')
    assert main(["config", "show", "--config", str(p)]) == 0
    out = capsys.readouterr().out
    assert "ss@word" not in out and "word@" not in out
    assert "mqtts://admin:********@broker.example:8883" in out


def test_config_check__a_refused_value_never_shows_a_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad mqtt.url (here its port) was echoed whole, password included, by config check, status, run and a
    refused SIGHUP (the journal, whose excerpts go to support)."""
    p = _sensors_config(tmp_path, 'url = "mqtt://bob:s3cret@127.0.0.1:99999"\npassword = 12345678\n')
    assert main(["config", "check", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert "s3cret" not in err and "12345678" not in err, err
    assert (
        f'{p}: mqtt.url: expected mqtt://host:port or mqtts://host:port, got "mqtt://bob:********@127.0.0.1:99999"'
        in err
    )
    assert f"{p}: mqtt.password: expected " in err and "got ********" in err


def test_cli__output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`edge-agent config show | head -c 20`: no BrokenPipeError traceback (issue 9, defect 13)."""
    p = tmp_path / "config.toml"
    # More than a pipe holds (64 KiB), so the writer really meets the closed pipe.
    keys = ", ".join(f'"keys/central-{i:05d}.pub.pem"' for i in range(3000))
    p.write_text(f'profile = "sensors"\n[device]\nid = "d"\nsite = "s"\n[commands]\ntrusted_keys = [{keys}]\n')
    r = subprocess.run(  # noqa: S602 - the shell's pipe is the point
        f"{sys.executable} -m edge_agent.cli config show --config {p} | head -c 20",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert len(r.stdout) == 20
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr


def test_keys_generate__makes_the_key_doctor_asks_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """doctor's remedy for a lost key is `edge-agent keys generate`: it exists (issue 9, defect 13)."""
    p = tmp_path / "config.toml"
    p.write_text(f'profile = "sensors"\nstate_dir = "{tmp_path / "state"}"\n[device]\nid = "d"\nsite = "s"\n')
    assert main(["keys", "generate", "--config", str(p)]) == 0
    key_path = load_config(p).key_path
    assert key_path.exists() and (key_path.stat().st_mode & 0o777) == 0o600
    assert "key id:     ed25519:" in capsys.readouterr().out
    assert main(["keys", "generate", "--config", str(p)]) == 1  # never replaced silently
    assert "refusing to overwrite" in capsys.readouterr().err


def test_cli__a_path_no_command_expected_to_be_wrong_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """central keygen, anchor key new, demo and install-service --root on a file were tracebacks."""
    afile = tmp_path / "afile"
    afile.write_text("")
    assert main(["central", "keygen", "--out", str(afile)]) == 1
    assert capsys.readouterr().err.strip() == f"edge-agent: {afile}: expected a folder (or nothing), got a file"
    assert main(["install-service", "--dry-run", "--root", str(afile)]) == 1
    err = capsys.readouterr().err
    assert f"{afile}/etc/passwd: part of this path is a file, where a folder was expected" in err
    assert "Traceback" not in err
