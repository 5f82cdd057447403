"""`alphapanda backtest` fed bad and unusual input: one line saying what is wrong and how to fix it
(exit code 2, no traceback), and nothing the run leaves out or repeats goes unsaid."""

from __future__ import annotations

from pathlib import Path

import pytest

import alphapanda
from alphapanda.cli import main
from alphapanda.feed import TICK_CSV_COLUMNS
from alphapanda.runtime.embedded import EmbeddedRedis

SAMPLE_DAY = Path(alphapanda.__file__).parent / "data" / "sample_day_nse.csv"
SAMPLE_HEADER, *SAMPLE_ROWS = SAMPLE_DAY.read_text().splitlines()
STRATEGY = """\
strategies:
  - name: x
    kind: ema_crossover
    instruments: all
    brokers: [{broker}]
    params: {{fast: 5, slow: 20, quantity: 10}}
"""


def _backtest(argv: list[str]) -> int:
    try:
        return main(["backtest", "--no-progress", *argv])
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code or 0)


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line `alphapanda backtest argv` stops with (exit 2, nothing run)."""
    code = _backtest(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert lines and "Traceback" not in err
    assert len(lines) == 1 or lines[-1].startswith("alphapanda backtest: error: ")  # argparse: usage first
    return lines[-1]


def _ran(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    code = _backtest(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


def _tick_file(tmp_path: Path, rows: list[str], name: str = "ticks.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([SAMPLE_HEADER, *rows]) + "\n")
    return path


# --- --broker -------------------------------------------------------------------------------------


def test_broker_when_not_paper_then_the_message_says_it_once(capsys: pytest.CaptureFixture[str]) -> None:
    # Before: "alphapanda: --broker zerodha: --broker zerodha: a backtest trades ..."
    assert _refused(["--simulate", "10", "--broker", "zerodha"], capsys) == (
        "alphapanda: --broker zerodha: a backtest trades a paper broker (paper, paper-2, ...)"
    )


def test_broker_when_a_replay_broker_then_refused(capsys: pytest.CaptureFixture[str]) -> None:
    # Before: ran and reported no trade: a replay broker's matcher takes only replayed ticks.
    assert "--broker paper-replay: a backtest trades a paper broker" in _refused(
        ["--simulate", "10", "--broker", "paper-replay"], capsys
    )


def test_broker_when_a_list_then_refused_asking_for_one_name(capsys: pytest.CaptureFixture[str]) -> None:
    # Before: "broker 'paper,paper-2' is of no known kind", as if the name were misspelt.
    assert _refused(["--simulate", "10", "--broker", "paper,paper-2"], capsys) == (
        "alphapanda: --broker paper,paper-2: a backtest trades one paper broker: give one name (e.g. paper)"
    )


def test_broker_when_no_strategy_trades_it_then_refused_naming_those_that_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: ran and reported a flat, trade-free backtest with exit code 0.
    line = _refused(["--simulate", "10", "--broker", "paper-2"], capsys)
    assert line.startswith("alphapanda: --broker paper-2: no strategy in the shipped strategies.yaml trades")
    assert "(they list paper, zerodha)" in line
    other = tmp_path / "s.yaml"
    other.write_text(STRATEGY.format(broker="paper-2"))
    assert f"--broker paper: no strategy in {other} trades on it (they list paper-2)" in _refused(
        ["--simulate", "10", "--strategies", str(other)], capsys
    )
    _ran(["--simulate", "10", "--strategies", str(other), "--broker", "paper-2"], capsys)


# --- --strategies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "says"),
    [
        # Before: a five-line PyYAML message quoting "<unicode string>".
        ("strategies: [\n", "line 2, column 1: not valid YAML: expected the node content"),
        # Before: "str.yaml:  is invalid: input should be a valid dictionary or instance of strategiesfile".
        ("hello\n", "found a str, not a `strategies:` list at the top"),
        ("", "found nothing, not a `strategies:` list at the top"),
        ("strategy:\n  - name: x\n", "found keys strategy, not a `strategies:` list at the top"),
    ],
)
def test_strategies_when_not_a_strategies_yaml_then_one_line_names_the_problem(
    tmp_path: Path, content: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(content)
    line = _refused(["--simulate", "10", "--strategies", str(path)], capsys)
    assert line.startswith(f"alphapanda: --strategies {path}") and says in line


def test_strategies_when_binary_or_a_folder_then_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "s.yaml"
    binary.write_bytes(b"\x1f\x8b\x08\x00\xff\xfe")
    # Before: a UnicodeDecodeError traceback.
    assert "not a text file: give a strategies YAML file" in _refused(
        ["--simulate", "10", "--strategies", str(binary)], capsys
    )
    # Before: "no such file: <folder>", though it exists.
    assert f"{tmp_path} is a folder: name a file in it" in _refused(
        ["--simulate", "10", "--strategies", str(tmp_path)], capsys
    )


def test_strategies_when_unknown_kind_then_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(STRATEGY.format(broker="paper").replace("ema_crossover", "nosuch"))
    assert "unknown strategy kind 'nosuch'; known: ema_crossover" in _refused(
        ["--simulate", "10", "--strategies", str(path)], capsys
    )


# --- --state redis --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        # Before: redis.exceptions.ConnectionError and ValueError tracebacks.
        ("redis://127.0.0.1:1/0", "--state redis: cannot use ALPHAPANDA_REDIS__URL redis://127.0.0.1:1/0"),
        ("notaurl", "--state redis: ALPHAPANDA_REDIS__URL notaurl is not a Redis URL"),
    ],
)
def test_state_redis_when_redis_cannot_be_reached_then_one_line(
    url: str, says: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ALPHAPANDA_REDIS__URL", url)
    assert says in _refused(["--simulate", "10", "--state", "redis"], capsys)


def test_state_redis_when_the_database_holds_data_then_one_line(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.set("live", "state")
    monkeypatch.setenv("ALPHAPANDA_REDIS__URL", redis_server.url)
    # Before: a BacktestError traceback (the refusal itself was right: live state is never touched).
    line = _refused(["--simulate", "10", "--state", "redis"], capsys)
    assert line.startswith("alphapanda: --state redis: the Redis database at") and "is not empty" in line
    assert client.get("live") == b"state" and client.dbsize() == 1
    client.close()


# --- --ticks --------------------------------------------------------------------------------------


def test_ticks_when_out_of_order_and_windowed_then_refused_not_an_empty_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: the window of a reversed file "selected none" (the cut stops where time passes --to),
    # and without a window the file backtested time backwards, exit code 0.
    path = _tick_file(tmp_path, SAMPLE_ROWS[::-1])
    window = ["--from", "2026-01-05T12:00:00+05:30", "--to", "2026-01-05T13:00:00+05:30"]
    line = _refused(["--ticks", str(path), *window], capsys)
    assert "ticks.csv line 6: exchange_timestamp" in line and "a tick file must be in time order" in line
    assert "a tick file must be in time order" in _refused(["--ticks", str(path)], capsys)


def test_ticks_when_sorted_by_instrument_and_cut_by_to_then_refused_not_partly_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: the run stopped reading at the first instrument's first tick past --to, so every
    # other instrument's window was dropped without a word (exit code 0, a tenth of the ticks).
    by_instrument = sorted(SAMPLE_ROWS, key=lambda r: int(r.split(",")[0]))
    path = _tick_file(tmp_path, by_instrument)
    window = ["--from", "2026-01-05T12:00:00+05:30", "--to", "2026-01-05T13:00:00+05:30"]
    assert "a tick file must be in time order (sort it by exchange_timestamp)" in _refused(
        ["--ticks", str(path), *window], capsys
    )


@pytest.mark.parametrize(
    ("window", "says"),
    [
        (
            ["--from", "2026-01-06T09:15:00+05:30"],
            "the file ends at 2026-01-05T15:29:45+05:30, before --from 2026-01-06T09:15:00+05:30",
        ),
        (
            ["--to", "2026-01-05T03:00:00Z"],
            "the file starts at 2026-01-05T09:15:00+05:30, not before --to 2026-01-05T03:00:00+00:00",
        ),
    ],
)
def test_ticks_when_the_window_is_outside_the_file_then_it_says_where_the_file_is(
    window: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        _refused(["--ticks", str(SAMPLE_DAY), *window], capsys) == f"alphapanda: no ticks to backtest: {says}"
    )


def test_ticks_when_the_window_is_in_utc_then_it_is_the_same_instants_as_ist(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ist, _ = _ran(
        ["--ticks", str(SAMPLE_DAY), "--from", "2026-01-05T12:00:00+05:30", "--to", "2026-01-05T13:00+05:30"],
        capsys,
    )
    utc, _ = _ran(
        ["--ticks", str(SAMPLE_DAY), "--from", "2026-01-05T06:30:00Z", "--to", "2026-01-05T07:30:00+00:00"],
        capsys,
    )
    summary = [line for line in ist.splitlines() if "speed" not in line]
    assert summary == [line for line in utc.splitlines() if "speed" not in line]
    assert "ticks           960" in ist


def test_ticks_when_of_unknown_instruments_then_a_note_names_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: ticks of an unknown token were counted and silently never traded, and a known
    # token under another symbol was traded as the token's instrument without a word.
    rows = [r.replace("738561,RELIANCE,", "999999,NOSUCH,") for r in SAMPLE_ROWS[:200]]
    rows = [r.replace("341249,HDFCBANK,", "341249,HDFC,") for r in rows]
    out, err = _ran(["--ticks", str(_tick_file(tmp_path, rows))], capsys)
    assert "ticks           200" in out
    notes = err.strip().splitlines()
    assert len(notes) == 1
    assert notes[0].startswith(
        f"alphapanda: note: 50 ticks in {tmp_path / 'ticks.csv'} are of instruments not in the instrument "
        "list, so no strategy traded them: 999999 NOSUCH; 50 ticks in "
    )
    assert "and were traded as the token's: 341249 HDFC, listed as HDFCBANK (check the" in notes[0]
    _, clean = _ran(["--ticks", str(SAMPLE_DAY)], capsys)
    assert clean == ""


def test_ticks_when_a_tick_is_repeated_then_a_note_says_it_was_traded_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: a file with every line twice ran as twice the ticks, without a word.
    doubled = [r for r in SAMPLE_ROWS[:100] for _ in (0, 1)]
    out, err = _ran(["--ticks", str(_tick_file(tmp_path, doubled))], capsys)
    assert "ticks           200" in out
    assert err.strip() == (
        f"alphapanda: note: 100 ticks in {tmp_path / 'ticks.csv'} repeat their instrument's previous tick "
        "exactly (the first: 738561 RELIANCE at 2026-01-05T09:15:00+05:30) and were traded again: if the "
        "file was recorded twice, remove the repeated lines"
    )


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\x1f\x8b\x08\x00", "is gzip-compressed: decompress it first (gunzip ticks.csv)"),
        (b"PAR1\x00\x00", "is a Parquet file: name it *.parquet"),
        (b"", "is empty: a tick file starts with the header line " + ",".join(TICK_CSV_COLUMNS)),
    ],
)
def test_ticks_when_not_a_csv_then_one_line(
    tmp_path: Path, content: bytes, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ticks.csv"
    path.write_bytes(content)
    assert _refused(["--ticks", str(path)], capsys) == f"alphapanda: {path} {says}"


def test_ticks_when_a_corrupt_parquet_then_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "ticks.parquet"
    path.write_bytes(b"not parquet")
    # Before: a pyarrow.lib.ArrowInvalid traceback.
    assert f"alphapanda: {path} is not a readable Parquet file" in _refused(["--ticks", str(path)], capsys)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--ticks", "{tmp}/missing.csv"], "no such file"),
        (["--ticks", "{tmp}"], "is a folder: name a file in it"),
        (["--simulate", "0"], "'0' must be 1 or more"),
        (["--simulate", "-5"], "'-5' must be 1 or more"),
        (["--simulate", "2.5"], "'2.5' is not a whole number"),
        (["--simulate", "10", "--from", "2026-01-05T09:15:00"], "has no timezone"),
        (["--simulate", "10", "--to", "09:15"], "is not an ISO 8601 time"),
        (["--simulate", "10", "--broker", "kite"], "no known kind"),
    ],
)
def test_arguments_when_bad_then_one_line(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert says in _refused([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)


def test_replay_when_topic_is_not_a_ticks_topic_then_refused_before_looking_for_a_pipeline(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Before: "no running pipeline found", and with one running, "no such topic" only then.
    with pytest.raises(SystemExit) as stopped:
        main(["replay", "--topic", "paper.orders.filled", "--from", "0"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    line = err.strip().splitlines()[-1]
    # (How argparse quotes the choices differs between Python versions.)
    assert line.startswith("alphapanda replay: error: argument --topic: invalid choice: ")
    assert "'paper.orders.filled'" in line
    assert "market.equity.ticks" in line and "market.fno.ticks" in line
