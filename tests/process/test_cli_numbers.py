"""Numbers on the command line: out of range, not a number, or not finite (nan, inf) are usage errors naming
the option and the range, before anything runs. nan passed every range check (nan < 1 is false), and plain
int/float options took 0 or negatives: `central ingest --sweep-every-s 0` would look for holes without pause."""

from __future__ import annotations

import pytest

from edge_agent.cli.main import main

CASES = [
    (["verify", "--count", "-1"], "--count", "expected an integer >= 0, got '-1'"),
    (["verify", "--idle", "nan"], "--idle", "expected a number >= 0.1, got 'nan'"),
    (["verify", "--timeout", "inf"], "--timeout", "expected a number >= 0.1, got 'inf'"),
    (["verify", "--from-seq", "0"], "--from-seq", "expected an integer >= 1, got '0'"),
    (["outbox", "export", "--since", "-3"], "--since", "expected an integer >= 0, got '-3'"),
    (["sensors", "watch", "m1", "--count", "-5"], "--count", "expected an integer >= 0, got '-5'"),
    (["sensors", "watch", "m1", "--timeout-s", "nan"], "--timeout-s", "expected a number >= 0.1, got 'nan'"),
    (["bench", "capture", "--wait", "-1"], "--wait", "expected a number >= 0, got '-1'"),
    (["central", "anchor", "--max-records", "0"], "--max-records", "expected an integer >= 1, got '0'"),
    (["central", "anchor", "--receipt-timeout-s", "nan"], "--receipt-timeout-s", "got 'nan'"),
    (["central", "anchor", "deploy", "--k", "0"], "--k", "expected an integer >= 1, got '0'"),
    (["central", "prove", "--seq", "0"], "--seq", "expected an integer >= 1, got '0'"),
    (["central", "ingest", "--sweep-every-s", "0"], "--sweep-every-s", "expected a number >= 0.1, got '0'"),
    (["central", "ingest", "--hole-after-s", "inf"], "--hole-after-s", "expected a number >= 0, got 'inf'"),
    (["central", "ingest", "--replay-window-s", "-1"], "--replay-window-s", "got '-1'"),
    (["central", "ingest", "--session-expiry-s", "-1"], "--session-expiry-s", "expected an integer 0-4294967295"),
    (["central", "simulate", "--records", "0"], "--records", "expected an integer >= 1, got '0'"),
    (["central", "simulate", "--at-seq", "0"], "--at-seq", "expected an integer >= 1, got '0'"),
]


@pytest.mark.parametrize(("argv", "option", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_cli__a_number_out_of_range_is_a_usage_error_naming_the_option(
    argv: list[str], option: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert f"argument {option}" in err and message in err, err
