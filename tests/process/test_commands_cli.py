"""`edge-agent central keygen` and `central sign-command`, down to a device obeying the published command."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.cli import main as cli
from edge_agent.spine.keys import load_public_keys
from edge_agent.spine.remote.message import load_trusted, verify_command
from tests.broker import Broker
from tests.spine.test_commands import start_agent, stop_agent


def test_central_keygen__writes_a_private_key_0600_and_a_public_pem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["central", "keygen", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    priv, pub = tmp_path / "c" / "central.key", tmp_path / "c" / "central.pub.pem"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert len(load_public_keys(pub)) == 1
    assert f"key id:      {next(iter(load_trusted([pub])))}" in out
    assert cli.main(["central", "keygen", "--out", str(tmp_path / "c")]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err


def test_central_sign_command__prints_a_message_the_device_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli.main(["central", "keygen", "--out", str(tmp_path)])
    capsys.readouterr()
    rc = cli.main(
        [
            "central",
            "sign-command",
            "--key",
            str(tmp_path / "central.key"),
            "--device",
            "truck-7",
            "--name",
            "resend",
            "--args",
            '{"first_seq": 10, "last_seq": 20}',
            "--ttl-s",
            "120",
        ]
    )
    assert rc == 0
    payload = capsys.readouterr().out.strip().encode()
    trusted = load_trusted([tmp_path / "central.pub.pem"])
    msg = verify_command(
        payload, topic_name="resend", device="truck-7", trusted=trusted, now=datetime.now(UTC), max_bytes=4096
    )
    assert msg.args == {"first_seq": 10, "last_seq": 20}
    assert (msg.expires_at - msg.issued_at).total_seconds() == 120


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--args", "{oops"], "--args: expected a JSON object, got invalid JSON"),
        (["--args", "[1]"], "--args: expected a JSON object, got list"),
        (["--args", '{"first_seq": 0, "last_seq": 1}'], "resend: first_seq: expected a seq >= 1, got 0"),
        # signed and published with exit 0 before, then refused by the device
        (["--args", '{"first_seq": 5, "last_seq": 1}'], "resend: last_seq: expected a seq from first_seq to"),
        (["--ttl-s", "99999999"], "ttl_s: expected seconds in"),
        (["--publish", "mqtt://127.0.0.1:1"], "--publish needs --site"),
        (["--publish", "http://x:1", "--site", "bj"], "--publish 'http://x:1': expected mqtt://host:port"),
        (["--device", "a/#"], "--device 'a/#': expected an id without '/', '+' or '#'"),
    ],
)
def test_central_sign_command__bad_input_exits_1_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    cli.main(["central", "keygen", "--out", str(tmp_path)])
    capsys.readouterr()
    base = ["central", "sign-command", "--key", str(tmp_path / "central.key"), "--device", "d", "--name", "resend"]
    if "--args" not in argv:
        base += ["--args", '{"first_seq": 1, "last_seq": 2}']
    assert cli.main(base + argv) == 1
    out, err = capsys.readouterr()
    assert message in err and out == "", "nothing is signed and printed before the input is checked"


def test_central_sign_command__publish_reaches_the_device(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import edge_agent.spine.remote.message as commands_mod

    rig = start_agent(tmp_path / "dev", broker, monkeypatch)
    try:
        # The device trusts the key the central team just made.
        assert cli.main(["central", "keygen", "--out", str(tmp_path / "central")]) == 0
        (tmp_path / "dev" / "central.pub.pem").write_bytes((tmp_path / "central" / "central.pub.pem").read_bytes())
        rc = cli.main(
            [
                "central",
                "sign-command",
                "--key",
                str(tmp_path / "central" / "central.key"),
                "--device",
                "dev-1",
                "--name",
                "status",
                "--publish",
                broker.url,
                "--site",
                "site-a",
            ]
        )
        assert rc == 0, capsys.readouterr().err
        assert "published to edge/site-a/dev-1/cmd/status" in capsys.readouterr().err
        (out,) = rig.wait_outcomes(1)
        assert out["event"] == "command_done" and out["command"] == "status"
        assert commands_mod.load_trusted(rig.agent.cfg.commands.trusted_keys).keys() == {out["key"]}
        assert json.loads(json.dumps(out))["result"]["health_emitted"] is True
    finally:
        stop_agent(rig)
