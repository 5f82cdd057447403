"""Strategy runner: market ticks -> {broker}.signals.raw, for each broker a strategy trades on."""

import functions_framework
from cloudevents.http import CloudEvent

from alphapanda.runtime.function import stage_handler
from alphapanda.topics import Function

_handle = stage_handler(Function.STRATEGY_RUNNER)


@functions_framework.cloud_event
def handle(cloud_event: CloudEvent) -> None:
    _handle(cloud_event)
