"""Run the local pipeline in its own process until it drains; optionally die mid-batch.

`--die-before-commit GROUP:N` makes the worker of consumer group GROUP kill its own process
(SIGKILL: no cleanup, no flush) at its N-th commit, i.e. after it applied its state and
published its outputs but before it committed the offsets: the worst moment for exactly-once.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys

from alphapanda.bus.dispatcher import BindingWorker, Dispatcher
from alphapanda.config import load_settings
from alphapanda.runtime.bootstrap import build_core, connect
from alphapanda.topics import bindings


def main() -> int:
    # A stuck run can be asked where it is: kill -USR1 <pid> dumps every thread's stack.
    faulthandler.register(signal.SIGUSR1)
    parser = argparse.ArgumentParser()
    parser.add_argument("--die-before-commit", default="")
    args = parser.parse_args()
    if args.die_before_commit:
        group, _, nth = args.die_before_commit.partition(":")
        calls = {"n": 0}
        original = BindingWorker._commit

        def commit_or_die(self: BindingWorker, consumer, records):  # type: ignore[no-untyped-def]
            if self.binding.consumer_group == group:
                calls["n"] += 1
                if calls["n"] >= int(nth):
                    os.kill(os.getpid(), signal.SIGKILL)
            original(self, consumer, records)

        BindingWorker._commit = commit_or_die  # type: ignore[method-assign]
    settings = load_settings()
    core = build_core(settings)
    store, publisher = connect(settings)
    dispatcher = Dispatcher(
        bindings(list(settings.brokers)), core.stage_for, store, publisher, settings.kafka, settings.delivery
    )
    dispatcher.start()
    drained = dispatcher.wait_idle(timeout_s=120, quiet_s=1.5)
    if not drained:
        for w in dispatcher.workers:
            print(w.name, w.stats, file=sys.stderr)
    dispatcher.stop()
    publisher.close()
    return 0 if drained else 3


if __name__ == "__main__":
    sys.exit(main())
