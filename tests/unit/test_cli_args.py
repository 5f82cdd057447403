"""Bad command-line values stop `alphapanda` before any work, with one line and exit code 2."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import alphapanda
from alphapanda import cli_args
from alphapanda.cli import main
from alphapanda.config import ConfigError, first_instruments

IST = timezone(timedelta(hours=5, minutes=30))
SAMPLE_DAY = Path(alphapanda.__file__).parent / "data" / "sample_day_nse.csv"


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code or 0)


@pytest.mark.parametrize("text", ["1", "50", "1_000_000", "1,000,000"])
def test_whole_number_when_a_count_then_its_value(text: str) -> None:
    assert cli_args.whole_number(text) == int(text.replace("_", "").replace(",", ""))


@pytest.mark.parametrize(
    ("text", "says"), [("0", "1 or more"), ("-3", "1 or more"), ("2.5", "whole"), ("x", "whole")]
)
def test_whole_number_when_not_a_count_then_it_says_why(text: str, says: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=says):
        cli_args.whole_number(text)


def test_whole_numbers_when_a_comma_list_then_each_count() -> None:
    assert cli_args.whole_numbers("1,50") == [1, 50]
    assert cli_args.whole_numbers(" 7 ") == [7]
    with pytest.raises(argparse.ArgumentTypeError, match="names no number"):
        cli_args.whole_numbers(",")
    with pytest.raises(argparse.ArgumentTypeError, match="1 or more"):
        cli_args.whole_numbers("1,0")


@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
def test_numbers_when_not_finite_then_refused(text: str) -> None:
    for parse in (cli_args.positive_number, cli_args.non_negative_number):
        with pytest.raises(argparse.ArgumentTypeError, match="finite"):
            parse(text)


def test_positive_and_non_negative_numbers_differ_at_zero() -> None:
    assert cli_args.non_negative_number("0") == 0.0
    assert cli_args.positive_number("0.5") == 0.5
    with pytest.raises(argparse.ArgumentTypeError, match="more than 0"):
        cli_args.positive_number("0")
    with pytest.raises(argparse.ArgumentTypeError, match="0 or more"):
        cli_args.non_negative_number("-1")


@pytest.mark.parametrize(
    ("text", "ok"), [("0", True), ("65535", True), ("65536", False), ("-1", False), ("x", False)]
)
def test_port_when_given_then_only_tcp_ports(text: str, ok: bool) -> None:
    if ok:
        assert cli_args.port(text) == int(text)
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            cli_args.port(text)


def test_aware_time_when_no_zone_then_refused() -> None:
    assert cli_args.aware_time("2026-01-05T09:15:00+05:30") == datetime(2026, 1, 5, 9, 15, tzinfo=IST)
    with pytest.raises(argparse.ArgumentTypeError, match="no timezone"):
        cli_args.aware_time("2026-01-05T09:15:00")
    with pytest.raises(argparse.ArgumentTypeError, match="ISO 8601"):
        cli_args.aware_time("yesterday")


def test_output_file_when_folder_missing_or_suffix_wrong_then_refused(tmp_path: Path) -> None:
    parse = cli_args.output_file(".json")
    assert parse(str(tmp_path / "r.json")) == tmp_path / "r.json"
    assert parse(str(tmp_path / "R.JSON")) == tmp_path / "R.JSON"
    with pytest.raises(argparse.ArgumentTypeError, match="no such folder"):
        parse(str(tmp_path / "missing" / "r.json"))
    with pytest.raises(argparse.ArgumentTypeError, match=r"\*\.json"):
        parse(str(tmp_path / "r.txt"))
    (tmp_path / "d.json").mkdir()
    with pytest.raises(argparse.ArgumentTypeError, match="is a folder"):
        parse(str(tmp_path / "d.json"))
    assert cli_args.output_file()(str(tmp_path / "any.prof")) == tmp_path / "any.prof"


def test_time_window_when_empty_then_says_so() -> None:
    at = datetime(2026, 1, 5, 9, 15, tzinfo=IST)
    assert cli_args.time_window(at, at + timedelta(seconds=1)) is None
    assert cli_args.time_window(None, at) is None
    assert cli_args.time_window(at, None) is None
    problem = cli_args.time_window(at, at)
    assert problem is not None and "not after --from" in problem


@pytest.mark.parametrize("name", ["paper", "paper-2", "zerodha", "paper-replay"])
def test_broker_name_when_of_a_known_kind_then_kept(name: str) -> None:
    assert cli_args.broker_name(name) == name


@pytest.mark.parametrize(("name", "says"), [("kite", "no known kind"), ("Paper", "invalid"), ("", "invalid")])
def test_broker_name_when_unknown_or_malformed_then_refused(name: str, says: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=says):
        cli_args.broker_name(name)


def test_first_instruments_when_more_than_the_list_then_refused() -> None:
    assert first_instruments([1, 2, 3], 2) == [1, 2]
    assert first_instruments([1, 2, 3], None) == [1, 2, 3]
    with pytest.raises(ConfigError, match="--instruments 4: the instrument list has 3"):
        first_instruments([1, 2, 3], 4)


BAD_ARGUMENTS = [
    # Each of these ran before (a traceback, or a silently different run, or a failure only after the work).
    (["backtest", "--simulate", "100", "--bar", "0"], "--bar"),
    (["backtest", "--simulate", "100", "--json", "{tmp}/missing/r.json"], "no such folder"),
    (["backtest", "--simulate", "100", "--plot", "{tmp}/equity.gif"], "--plot"),
    (["backtest", "--simulate", "100", "--instruments", "1000"], "--instruments 1000"),
    (
        [
            "backtest",
            "--simulate",
            "100",
            "--from",
            "2026-01-06T00:00:00+05:30",
            "--to",
            "2026-01-05T00:00:00+05:30",
        ],
        "not after --from",
    ),
    (["backtest", "--simulate", "200", "--from", "2030-01-01T00:00:00+05:30"], "no ticks to backtest"),
    (["backtest", "--ticks", "{sample}", "--instruments", "2"], "--instruments picks simulated"),
    (["bench", "backtest", "--ticks", "101", "--instruments", "50"], "not a multiple"),
    (["bench", "backtest", "--instruments", "0"], "--instruments"),
    (["bench", "backtest", "--runs", "0"], "--runs"),
    (["bench", "backtest", "--instruments", "50", "--ours-ticks", "10"], "--ours-ticks"),
    (["bench", "pipeline", "--ticks", "0"], "--ticks"),
    (["bench", "http", "--events", "0"], "--events"),
    (["simulate", "--ticks", "10", "--out", "{tmp}/missing/t.csv"], "no such folder"),
    (["simulate", "--ticks", "10", "--out", "{tmp}/t.csv", "--instruments", "1000"], "--instruments 1000"),
    (["run", "--metrics-port", "99999"], "not a port"),
    (["run", "--duration", "0"], "--duration"),
    (["run", "--instruments", "1000"], "--instruments 1000"),
    (["run", "--strategies", "{tmp}/hello.yaml"], "not a `strategies:` list at the top"),
    (["kite-sandbox", "--port", "65535"], "--ws-port"),
    (["kite-sandbox", "--port", "9000", "--ws-port", "9000"], "need a port each"),
    (["kite-sandbox", "--host", "localhost"], "not an IPv4 address: use 127.0.0.1"),
    (["kite-sandbox", "--postback-url", "ftp://x/"], "not an http(s) URL"),
    (["kite-sandbox", "--redirect-url", "example.com/cb"], "not an http(s) URL"),
    (["trace", "abc", "--timeout", "0"], "--timeout"),
    (["halt", "--broker", "nope"], "no known kind"),
    (["resume", "--broker", "Paper"], "invalid"),
    (["reconcile", "--broker", "kite"], "no known kind"),
]


@pytest.mark.parametrize(
    ("argv", "says"), BAD_ARGUMENTS, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_cli_when_an_argument_is_bad_then_one_line_and_exit_2(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "hello.yaml").write_text("hello\n")
    code = _exit_code([a.replace("{tmp}", str(tmp_path)).replace("{sample}", str(SAMPLE_DAY)) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.strip() and says in err.strip().splitlines()[-1]
    assert out == ""  # nothing ran
    assert not (tmp_path / "t.csv").exists()


def test_kite_sandbox_when_only_the_api_key_is_set_then_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ALPHAPANDA_KITE__API_KEY", "mykey")
    monkeypatch.delenv("ALPHAPANDA_KITE__API_SECRET", raising=False)
    code = _exit_code(["kite-sandbox"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.strip() == (
        "alphapanda: set both ALPHAPANDA_KITE__API_KEY and ALPHAPANDA_KITE__API_SECRET for the sandbox to "
        "serve, or neither"
    )


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["bench", "backtest", "--clients", "3"], "alphapanda bench backtest"),
        (["run", "--bogus"], "alphapanda run"),
        (["backtest", "--simulate", "10", "extra"], "alphapanda backtest"),
    ],
)
def test_cli_when_an_argument_is_unknown_then_the_command_says_so_with_its_own_usage(
    argv: list[str], command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # argparse alone reports a subcommand's unknown argument from the top-level parser, whose
    # usage lists only the commands, not what this one takes.
    code = _exit_code(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"usage: {command} ")
    assert lines[-1].startswith(f"{command}: error: unrecognized arguments: ")
