"""Order matcher (paper brokers): market ticks -> {broker}.orders.filled | .cancelled | .submitted."""

import functions_framework
from cloudevents.http import CloudEvent

from alphapanda.runtime.function import stage_handler
from alphapanda.topics import Function

_handle = stage_handler(Function.ORDER_MATCHER)


@functions_framework.cloud_event
def handle(cloud_event: CloudEvent) -> None:
    _handle(cloud_event)
