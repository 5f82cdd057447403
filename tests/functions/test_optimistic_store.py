"""The function adapter's `OptimisticStore` on a real redis-server: one round trip per batch, and
the outcomes of `RedisStateStore` (effectively once, no lost update, limits never breached)."""

from __future__ import annotations

import multiprocessing as mp
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal

import pytest
import redis

from alphapanda.bus.delivery import deliver_batch
from alphapanda.config import RiskLimits
from alphapanda.events import (
    Event,
    EventType,
    InvalidEvent,
    Side,
    Signal,
    SignalValidated,
    derive_id,
)
from alphapanda.runtime.embedded import EmbeddedRedis
from alphapanda.runtime.function import OptimisticStore
from alphapanda.stages.risk_ledger import LedgerView, ledger_reads
from alphapanda.stages.risk_manager import RiskManager
from alphapanda.state.store import Decision, RedisStateStore, Work
from signal_events import raw_signal_event

COUNTER = "paper:test:counter"


def _event(
    n: int, *, token: int = 738561, side: Side = Side.BUY, quantity: int = 1, price: Decimal = Decimal("1480")
) -> Event:
    return raw_signal_event(n, token=token, side=side, quantity=quantity, price=price)


def _counting(event: Event, *, fail: bool = False, bad: bool = False) -> Work:
    """A work item that adds one to a shared counter and emits the event's validation."""

    def decide(values: dict[str, str | None]) -> Decision:
        if fail:
            raise RuntimeError(f"{event.id} broke")
        if bad:
            raise InvalidEvent(f"{event.id} is bad")
        assert isinstance(event.data, Signal)
        out = event.child("validated", SignalValidated(signal=event.data), source="/test")
        return Decision([out], writes={COUNTER: str(int(values[COUNTER] or 0) + 1)})

    return Work(f"paper:claim:test:{event.id}", [COUNTER], decide)


@pytest.fixture
def client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url)
    yield c
    c.close()


def _calls(client: redis.Redis, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_batch_when_it_commits_then_writes_and_claims_are_stored_and_later_batches_take_one_round_trip(
    client: redis.Redis,
) -> None:
    store = OptimisticStore(client, claim_ttl_s=600)
    first = store.process_batch([_counting(_event(1)), _counting(_event(2))])
    assert first.failure is None
    assert client.get(COUNTER) == b"2"
    assert client.ttl("paper:claim:test:sig-1") > 0
    ids = [d.outputs[0].id for d in first.done if d.outputs]
    assert ids == [derive_id("sig-1", "validated"), derive_id("sig-2", "validated")]
    reads, scripts = _calls(client, "mget"), _calls(client, "evalsha")
    for n in range(3, 8):
        assert store.process_batch([_counting(_event(n))]).failure is None
    # The counter was learned from the first batch's commit: one script call each, and no read
    # but the one inside the script.
    assert (_calls(client, "mget") - reads, _calls(client, "evalsha") - scripts) == (5, 5)
    assert client.get(COUNTER) == b"7"


def test_batch_when_another_writer_changed_a_value_it_knew_then_it_decides_again_on_the_current_one(
    client: redis.Redis,
) -> None:
    store = OptimisticStore(client, claim_ttl_s=600)
    store.process_batch([_counting(_event(1))])
    client.set(COUNTER, "41")  # another instance, behind this store's back
    result = store.process_batch([_counting(_event(2)), _counting(_event(3))])
    assert result.failure is None
    assert client.get(COUNTER) == b"43"


def test_batch_when_an_event_was_processed_before_then_its_stored_outputs_come_back_and_nothing_changes(
    client: redis.Redis,
) -> None:
    # The first delivery went through the WATCH store (another runtime); this store never saw it.
    first = RedisStateStore(client, claim_ttl_s=600).process_batch([_counting(_event(1))])
    store = OptimisticStore(client, claim_ttl_s=600)
    again = store.process_batch([_counting(_event(1)), _counting(_event(1)), _counting(_event(2))])
    assert again.failure is None
    assert [d.outputs for d in again.done[:2]] == [first.done[0].outputs, first.done[0].outputs]
    assert client.get(COUNTER) == b"2"  # only event 2 counted


def test_batch_when_one_item_is_bad_input_then_it_alone_is_left_out(client: redis.Redis) -> None:
    store = OptimisticStore(client, claim_ttl_s=600)
    result = store.process_batch(
        [_counting(_event(1)), _counting(_event(2), bad=True), _counting(_event(3))], isolate=(InvalidEvent,)
    )
    assert result.failure is None
    assert [d.outputs is None for d in result.done] == [False, True, False]
    assert isinstance(result.done[1].error, InvalidEvent)
    assert client.get(COUNTER) == b"2"
    assert client.get("paper:claim:test:sig-2") is None


def test_batch_when_an_item_fails_then_the_ones_before_it_are_committed_and_the_rest_untouched(
    client: redis.Redis,
) -> None:
    store = OptimisticStore(client, claim_ttl_s=600)
    result = store.process_batch(
        [_counting(_event(1)), _counting(_event(2), fail=True), _counting(_event(3))], isolate=(InvalidEvent,)
    )
    assert isinstance(result.failure, RuntimeError)
    assert len(result.done) == 1
    assert client.get(COUNTER) == b"1"
    assert client.get("paper:claim:test:sig-3") is None


def test_batch_when_the_server_lost_its_scripts_then_it_loads_the_script_again(client: redis.Redis) -> None:
    store = OptimisticStore(client, claim_ttl_s=600)
    store.process_batch([_counting(_event(1))])
    client.script_flush()
    assert store.process_batch([_counting(_event(2))]).failure is None
    assert client.get(COUNTER) == b"2"


def test_risk_when_the_same_signals_go_through_either_store_then_outputs_and_ledger_are_the_same(
    redis_server: EmbeddedRedis,
) -> None:
    stage = RiskManager(frozenset({"paper"}), limits_for=lambda _b: LIMITS)
    events = _signals(seed=3, count=300)
    outcomes: list[tuple[list[list[tuple[str, str]]], dict[str, str | None]]] = []
    for db, make in ((1, RedisStateStore), (2, OptimisticStore)):
        client = redis.Redis.from_url(redis_server.url, db=db)
        store = make(client, 600)
        rng = random.Random(7)
        results: list[list[tuple[str, str]]] = []
        at = 0
        while at < len(events):
            size = rng.randint(1, 4)
            delivery = deliver_batch(stage, events[at : at + size], store)
            assert delivery.failure is None
            results += [[(e.id, e.type.value) for e in r] for r in delivery.results if isinstance(r, list)]
            at += size
        outcomes.append((results, _ledger(client)))
    assert outcomes[0] == outcomes[1]
    assert any(t == EventType.SIGNAL_REJECTED.value for r in outcomes[0][0] for _, t in r)


# --- racing processes, as two function instances (or more) would ---------------------------

WORKERS = 6
INSTRUMENTS = {738561: Decimal("1480"), 341249: Decimal("985"), 408065: Decimal("1520")}
LIMITS = RiskLimits(
    max_position_quantity=100,
    max_gross_exposure=Decimal("250000"),
    max_open_orders=10**9,
    max_trades_per_day=10**9,
    duplicate_window_s=0,
)


def _signals(seed: int, count: int) -> list[Event]:
    rng = random.Random(seed)
    out = []
    for n in range(count):
        token, price = rng.choice(list(INSTRUMENTS.items()))
        side = rng.choice([Side.BUY, Side.SELL])
        out.append(_event(n, token=token, side=side, quantity=rng.randint(1, 40), price=price))
    return out


def _ledger(client: redis.Redis) -> dict[str, str | None]:
    keys = [k for token in INSTRUMENTS for k in ledger_reads("paper", token, "alpha")]
    return {k: (v.decode() if v is not None else None) for k, v in zip(keys, client.mget(keys), strict=True)}


@dataclass(frozen=True)
class _Race:
    url: str
    events: Sequence[Event]
    seed: int


def _race(job: _Race, out: mp.Queue) -> None:  # type: ignore[type-arg]
    stage = RiskManager(frozenset({"paper"}), limits_for=lambda _b: LIMITS)
    store = OptimisticStore(redis.Redis.from_url(job.url), claim_ttl_s=3600)
    rng = random.Random(job.seed)
    validated = []
    at = 0
    while at < len(job.events):
        size = rng.randint(1, 4)
        delivery = deliver_batch(stage, job.events[at : at + size], store)
        assert delivery.failure is None
        for result in delivery.results:
            assert isinstance(result, list)
            for e in result:
                if isinstance(e.data, SignalValidated):
                    s = e.data.signal
                    validated.append((e.id, s.instrument_token, s.side.sign * s.quantity))
        at += size
    out.put(validated)


def test_risk_when_processes_race_on_one_limit_through_optimistic_stores_then_it_is_never_breached(
    redis_server: EmbeddedRedis,
) -> None:
    events = _signals(seed=5, count=2000)
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = []
    for w in range(WORKERS):
        mine = events[:]
        random.Random(w).shuffle(mine)  # every process sees every signal, in its own order
        procs.append(ctx.Process(target=_race, args=(_Race(redis_server.url, mine, w), out)))
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    values = _ledger(redis.Redis.from_url(redis_server.url))

    decided = {event_id: (token, signed) for r in results for event_id, token, signed in r}
    assert sum(len(r) for r in results) > len(decided), "the processes should have met on the same signals"
    per_token = dict.fromkeys(INSTRUMENTS, 0)
    for token, signed in decided.values():
        per_token[token] += signed
    gross = Decimal(0)
    for token, price in INSTRUMENTS.items():
        view = LedgerView.read(values, "paper", token, "alpha")
        assert view.position == per_token[token]  # no lost update
        assert abs(view.position) <= LIMITS.max_position_quantity
        assert view.notional == abs(view.position) * price
        gross += view.notional
    assert view.gross == gross <= LIMITS.max_gross_exposure
    assert 100 < len(decided) < len(events) - 100
