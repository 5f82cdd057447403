"""Trading engine: {broker}.signals.validated -> {broker}.orders.submitted, then .filled or .failed."""

import functions_framework
from cloudevents.http import CloudEvent

from alphapanda.runtime.function import stage_handler
from alphapanda.topics import Function

_handle = stage_handler(Function.TRADING_ENGINE)


@functions_framework.cloud_event
def handle(cloud_event: CloudEvent) -> None:
    _handle(cloud_event)
