"""Portfolio manager: {broker}.orders.filled -> positions and cash in Redis, {broker}.pnl.snapshots."""

import functions_framework
from cloudevents.http import CloudEvent

from alphapanda.runtime.function import stage_handler
from alphapanda.topics import Function

_handle = stage_handler(Function.PORTFOLIO_MANAGER)


@functions_framework.cloud_event
def handle(cloud_event: CloudEvent) -> None:
    _handle(cloud_event)
