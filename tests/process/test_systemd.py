"""The systemd unit (verified by systemd-analyze, sandbox checked against our engines) and install-service."""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_agent.cli.install import (
    InstallError,
    cmd_install_service,
    default_unit_path,
    install_service,
    register,
    render_unit,
)

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "edge-agent.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed (apt install systemd)"
)


def _directives(text: str) -> dict[str, list[str]]:
    """Unit file as {Section.Key: [values]} (keys may repeat, e.g. DeviceAllow=)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


def _fake_venv(base: Path) -> Path:
    venv = base / "venv"
    (venv / "bin").mkdir(parents=True)
    exe = venv / "bin" / "edge-agent"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return venv


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "notice", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60, env=env, check=False
    )


# ---------------------------------------------------------------- the unit


@needs_analyze
def test_unit__passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart's binary exists: point it at a venv that has one.
    unit = tmp_path / "edge-agent.service"
    unit.write_text(render_unit(UNIT.read_text(), venv=_fake_venv(tmp_path), user="edge-agent"))
    result = _verify(unit)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", f"systemd-analyze warned:\n{result.stderr}"


@needs_analyze
def test_unit__verify_catches_a_misspelled_key(tmp_path: Path) -> None:
    # The check above is only worth something if verify speaks up about a unit it cannot use fully.
    unit = tmp_path / "edge-agent.service"
    text = render_unit(UNIT.read_text(), venv=_fake_venv(tmp_path), user="edge-agent")
    unit.write_text(text.replace("LockPersonality=yes", "LockPersonalty=yes"))
    assert "Unknown key" in _verify(unit).stderr


def test_unit__has_the_service_contract() -> None:
    d = _directives(UNIT.read_text())
    one = {k: v[-1] for k, v in d.items()}
    assert one["Service.Type"] == "notify" and one["Service.NotifyAccess"] == "main"
    assert one["Service.WatchdogSec"] == "30"
    assert (one["Service.Restart"], one["Service.RestartSec"]) == ("on-failure", "5")
    assert one["Service.ExecStart"] == "/opt/edge-agent/venv/bin/edge-agent run --config /etc/edge-agent/config.toml"
    assert one["Service.ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert (one["Service.User"], one["Service.Group"]) == ("edge-agent", "edge-agent")
    assert set(one["Service.SupplementaryGroups"].split()) == {"dialout", "video", "input"}
    assert (one["Service.StateDirectory"], one["Service.StateDirectoryMode"]) == ("edge-agent", "0700")
    assert one["Service.ConfigurationDirectory"] == "edge-agent"
    assert one["Service.TimeoutStopSec"] == "15"
    assert one["Service.TimeoutStopFailureMode"] == "abort"  # a stuck stop leaves its stacks in the journal
    assert one["Install.WantedBy"] == "multi-user.target"


def test_unit__sandbox_keeps_devices_reachable() -> None:
    d = _directives(UNIT.read_text())
    one = {k: v[-1] for k, v in d.items()}
    for key in ("ProtectSystem",):
        assert one[f"Service.{key}"] == "strict"
    for key in (
        "ProtectHome",
        "NoNewPrivileges",
        "PrivateTmp",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "RestrictRealtime",
    ):
        assert one[f"Service.{key}"] == "yes", key
    assert one["Service.ReadWritePaths"] == "/var/lib/edge-agent"
    assert one["Service.SystemCallArchitectures"] == "native"
    assert set(one["Service.RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    # PrivateDevices=yes would hide every serial port; a closed policy lists what the drivers open.
    assert "Service.PrivateDevices" not in d
    assert one["Service.DevicePolicy"] == "closed"
    allowed = {v.split()[0] for v in d["Service.DeviceAllow"]}
    assert {"char-ttyUSB", "char-ttyACM", "char-ttyAMA", "char-ttyS", "char-video4linux", "char-input"} <= allowed


def test_unit__every_setting_is_explained() -> None:
    """Each group of settings is introduced by a comment line (the brief: comment each choice)."""
    # Settings that complete the one just above share its comment.
    paired = {"Description", "Group", "StateDirectoryMode", "ConfigurationDirectoryMode", "StartLimitBurst"}
    previous = ""
    for number, line in enumerate(UNIT.read_text().splitlines(), 1):
        key, is_setting, _ = line.partition("=")
        if is_setting and not line.startswith(("#", "[")) and key not in paired:
            same_key = previous.partition("=")[0] == key
            assert previous.startswith("#") or same_key, f"line {number} has no comment: {line}"
        previous = line


MDWE_PROBE = textwrap.dedent(r"""
    import ctypes, mmap, subprocess, shutil, sys
    libc = ctypes.CDLL(None, use_errno=True)
    # PR_SET_MDWE=65, PR_MDWE_REFUSE_EXEC_GAIN=1: what MemoryDenyWriteExecute=yes enforces
    if libc.prctl(65, 1, 0, 0, 0) != 0:
        print("NO-MDWE"); sys.exit(0)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        print("W+X mapping was allowed: the probe is not sandboxed"); sys.exit(3)
    except OSError:
        pass
    import importlib.resources, numpy as np, cv2, onnxruntime as ort, zxingcpp
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    img = np.full((48, 192, 3), 255, np.uint8)
    cv2.putText(img, "RMA 4711", (4, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
    blurred = cv2.GaussianBlur(img, (3, 3), 0)
    model = importlib.resources.files("rapidocr") / "models" / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = (blurred.astype(np.float32).transpose(2, 0, 1)[None] / 255.0 - 0.5) / 0.5
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x})
    assert out.shape == (1, 2), out.shape
    code = zxingcpp.create_barcode("RMA-4711", zxingcpp.BarcodeFormat.Code128).to_image(scale=2)
    found = zxingcpp.read_barcodes(np.asarray(code))
    assert [r.text for r in found] == ["RMA-4711"], found
    k = Ed25519PrivateKey.generate(); k.public_key().verify(k.sign(b"x"), b"x")
    import opencc
    assert opencc.OpenCC("t2s").convert("訂單號") == "订单号"
    cb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda v: v + 1)
    assert cb(41) == 42
    if shutil.which("tesseract"):
        cv2.imwrite(sys.argv[1], img)
        r = subprocess.run(["tesseract", sys.argv[1], "-", "--psm", "7"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    print("OK")
""")


def test_unit__memory_deny_write_execute_leaves_engines_working(tmp_path: Path) -> None:
    """OpenCV, onnxruntime, zxing-cpp, cryptography, OpenCC, ctypes and tesseract under the kernel's W^X lock."""
    pytest.importorskip("rapidocr")
    result = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE, str(tmp_path / "probe.png")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.stdout.strip() == "NO-MDWE":
        pytest.skip("kernel has no PR_SET_MDWE (Linux >= 6.3 needed to emulate MemoryDenyWriteExecute)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "OK"


# ---------------------------------------------------------------- install_service


def test_default_unit_path__is_the_checkout_unit() -> None:
    assert default_unit_path() == UNIT
    assert default_unit_path().is_file()


def test_render_unit__points_execstart_at_the_venv_and_user() -> None:
    text = render_unit(UNIT.read_text(), venv=Path("/srv/agent/venv"), user="agent2")
    d = _directives(text)
    assert d["Service.ExecStart"] == ["/srv/agent/venv/bin/edge-agent run --config /etc/edge-agent/config.toml"]
    assert d["Service.User"] == ["agent2"] and d["Service.Group"] == ["agent2"]
    # Nothing else changed.
    assert len(text.splitlines()) == len(UNIT.read_text().splitlines())


def test_render_unit__without_execstart_is_refused() -> None:
    with pytest.raises(InstallError, match="expected an ExecStart= line"):
        render_unit("[Service]\nType=notify\n", venv=Path("/v"), user="edge-agent")


def test_install_service__dry_run_writes_files_and_records_commands(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    commands = install_service(UNIT, root=root, venv=Path("/opt/edge-agent/venv"), dry_run=True)

    unit = root / "etc/systemd/system/edge-agent.service"
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert _directives(unit.read_text())["Service.ExecStart"] == [
        "/opt/edge-agent/venv/bin/edge-agent run --config /etc/edge-agent/config.toml"
    ]
    assert stat.S_IMODE((root / "etc/edge-agent").stat().st_mode) == 0o750
    assert stat.S_IMODE((root / "var/lib/edge-agent").stat().st_mode) == 0o700
    assert commands == [
        "useradd --system --no-create-home --home-dir /var/lib/edge-agent --shell /usr/sbin/nologin --user-group "
        f"--groups dialout,video,input --root {root} edge-agent",
        f"chown -R root:edge-agent {root}/etc/edge-agent",
        f"chmod -R g+rX,g-w,o= {root}/etc/edge-agent",
        f"chown -R edge-agent:edge-agent {root}/var/lib/edge-agent",
        f"systemctl --root={root} enable edge-agent.service",
    ]
    # Dry: no user was made, nothing enabled.
    assert not (root / "etc/passwd").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants").exists()


def test_install_service__a_dry_run_on_the_live_system_writes_nothing_and_checks_the_venv(tmp_path: Path) -> None:
    """`install-service --dry-run` on / wrote a real unit, with ExecStart on a venv that did not exist. The CLI
    now passes write=False there (root "/"); the root below stands for it, so this test touches no /etc."""
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(InstallError, match=r"--venv: expected /nowhere/venv/bin/edge-agent to be an executable"):
        install_service(UNIT, root=root, venv=Path("/nowhere/venv"), dry_run=True, write=False)
    exe = root / "opt/ea/venv/bin/edge-agent"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    commands = install_service(UNIT, root=root, venv=Path("/opt/ea/venv"), dry_run=True, write=False)
    written = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert written == ["opt", "opt/ea", "opt/ea/venv", "opt/ea/venv/bin", "opt/ea/venv/bin/edge-agent"]
    assert f"install -d -m 750 {root}/etc/edge-agent" in commands
    assert any(c.startswith(f"write {root}/etc/systemd/system/edge-agent.service") for c in commands)


def test_install_service__skips_useradd_and_missing_groups(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\ndialout:x:20:\nvideo:x:44:\n")
    commands = install_service(UNIT, root=root, venv=Path("/opt/edge-agent/venv"), dry_run=True)
    assert commands[0].startswith("useradd ") and "--groups dialout,video " in commands[0]
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nedge-agent:x:998:997::/:/usr/sbin/nologin\n")
    (root / "etc/group").write_text("root:x:0:\ndialout:x:20:edge-agent\nedge-agent:x:997:\n")
    commands = install_service(UNIT, root=root, venv=Path("/opt/edge-agent/venv"), dry_run=True)
    assert not any(c.startswith("useradd") for c in commands)
    # Installing into another root: numeric ids from the target, not names from this machine.
    assert f"chown -R 998:997 {root}/var/lib/edge-agent" in commands


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"user": "Edge Agent"}, r"--user: expected a system user name"),
        ({"user": "x" * 40}, r"--user: expected a system user name"),
        ({"venv": Path("relative/venv")}, r"--venv: expected an absolute path"),
        ({"venv": Path("/opt/my venv")}, r"--venv: expected an absolute path .* got '/opt/my venv'"),
        ({"dry_run": False}, r"--venv: expected /opt/edge-agent/venv/bin/edge-agent to be an executable"),
    ],
)
def test_install_service__bad_arguments_are_named(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"root": tmp_path, "venv": Path("/opt/edge-agent/venv"), "dry_run": True, **kwargs}
    with pytest.raises(InstallError, match=message):
        install_service(UNIT, **args)  # type: ignore[arg-type]
    assert not (tmp_path / "etc/systemd/system/edge-agent.service").exists()


def test_install_service__refuses_a_config_whose_state_dir_the_service_cannot_use(tmp_path: Path) -> None:
    """`init --dir /etc/edge-agent` without --state-dir keeps the key in /etc/edge-agent/state: install-service
    made it group-readable (chmod -R g+r on the config folder) and the sandboxed agent could not write there."""
    root = tmp_path / "root"
    conf = root / "etc/edge-agent/config.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text('profile = "truck"\nstate_dir = "/etc/edge-agent/state"\n')
    with pytest.raises(InstallError, match=r"state_dir: expected /var/lib/edge-agent .* got '/etc/edge-agent/state'"):
        install_service(UNIT, root=root, venv=Path("/opt/edge-agent/venv"), dry_run=True)
    assert not (root / "etc/systemd/system/edge-agent.service").exists()
    conf.write_text('profile = "truck"\nstate_dir = "/var/lib/edge-agent"\n')
    install_service(UNIT, root=root, venv=Path("/opt/edge-agent/venv"), dry_run=True)
    assert (root / "etc/systemd/system/edge-agent.service").exists()


def test_install_service__a_relative_root_is_given_to_useradd_and_systemctl_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--root img` ran `useradd --root img`: 'invalid chroot path 'img', only absolute paths are supported'."""
    (tmp_path / "img").mkdir()
    monkeypatch.chdir(tmp_path)
    commands = install_service(UNIT, root=Path("img"), venv=Path("/opt/edge-agent/venv"), dry_run=True)
    assert commands[0].endswith(f"--root {tmp_path}/img edge-agent"), commands[0]
    assert commands[-1] == f"systemctl --root={tmp_path}/img enable edge-agent.service"


def test_install_service__missing_unit_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match=r"nope\.service: cannot read the unit file"):
        install_service(tmp_path / "nope.service", root=tmp_path, venv=Path("/v"), dry_run=True)


def _target_root(base: Path) -> Path:
    """A minimal root file system as an image builder has it: user/group databases, a venv."""
    root = base / "root"
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\ndialout:x:20:\nvideo:x:44:\ninput:x:105:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\ndialout:*::\nvideo:*::\ninput:*::\n")
    for name in ("shadow", "gshadow"):
        (etc / name).chmod(0o600)
    _fake_venv(root / "opt/edge-agent")
    (etc / "edge-agent").mkdir()
    (etc / "edge-agent/config.toml").write_text('profile = "truck"\n')
    (etc / "edge-agent/config.toml").chmod(0o600)
    return root


@pytest.mark.skipif(os.geteuid() != 0, reason="useradd --root and chown need root")
@pytest.mark.skipif(not (shutil.which("useradd") and shutil.which("systemctl")), reason="needs useradd and systemctl")
def test_install_service__real_run_into_an_image_root(tmp_path: Path) -> None:
    root = _target_root(tmp_path)
    commands = install_service(UNIT, root=root, venv=Path("/opt/edge-agent/venv"), dry_run=False)
    assert commands[0].startswith("useradd ")

    user = next(
        line.split(":") for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("edge-agent:")
    )
    uid, gid, home, shell = int(user[2]), int(user[3]), user[5], user[6]
    assert (home, shell) == ("/var/lib/edge-agent", "/usr/sbin/nologin")
    groups = {line.split(":")[0]: line.split(":")[3] for line in (root / "etc/group").read_text().splitlines()}
    assert all(groups[g] == "edge-agent" for g in ("dialout", "video", "input"))

    state = (root / "var/lib/edge-agent").stat()
    assert (state.st_uid, state.st_gid, stat.S_IMODE(state.st_mode)) == (uid, gid, 0o700)
    conf_dir = (root / "etc/edge-agent").stat()
    assert (conf_dir.st_uid, conf_dir.st_gid, stat.S_IMODE(conf_dir.st_mode)) == (0, gid, 0o750)
    conf = (root / "etc/edge-agent/config.toml").stat()
    assert (conf.st_gid, stat.S_IMODE(conf.st_mode)) == (gid, 0o640)  # readable by the agent, by nobody else

    wants = root / "etc/systemd/system/multi-user.target.wants/edge-agent.service"
    assert wants.is_symlink() and os.readlink(wants) == "/etc/systemd/system/edge-agent.service"

    again = install_service(UNIT, root=root, venv=Path("/opt/edge-agent/venv"), dry_run=False)
    assert not any(c.startswith("useradd") for c in again), "a second install must not add the user again"
    users = [line.split(":")[0] for line in (root / "etc/passwd").read_text().splitlines()]
    assert users.count("edge-agent") == 1


# ---------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-agent")
    register(p.add_subparsers(dest="command"))
    return p


def test_cli__dry_run_prints_the_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["install-service", "--root", str(tmp_path), "--venv", "/opt/ea/venv", "--dry-run"])
    assert args.func is cmd_install_service
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"would run: systemctl --root={tmp_path} enable edge-agent.service" in out
    assert "next: create /etc/edge-agent/config.toml" in out
    unit = (tmp_path / "etc/systemd/system/edge-agent.service").read_text()
    assert "ExecStart=/opt/ea/venv/bin/edge-agent run" in unit


def test_cli__bad_user_exits_2_with_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["install-service", "--root", str(tmp_path), "--user", "Bad!", "--dry-run"])
    assert args.func(args) == 2
    assert "edge-agent: --user: expected a system user name" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to drop to nobody")
def test_cli__refuses_without_root(tmp_path: Path) -> None:
    code = (
        "import argparse, sys; from edge_agent.cli.install import register; p = argparse.ArgumentParser(); "
        "register(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
    )
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code, "install-service"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 1, result.stderr
    assert "install-service must run as root" in result.stderr
    assert "--dry-run or --root DIR" in result.stderr
