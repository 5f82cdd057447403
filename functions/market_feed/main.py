"""Market feed ingest: a tick CloudEvent over HTTP -> market.{asset_class}.ticks.

The long-running feed (simulator, replay, later the Kite ticker) is `alphapanda feed`; this
function lets any other source post ticks into the pipeline.
"""

import functions_framework
from cloudevents.http import CloudEvent

from alphapanda.runtime.function import tick_ingest_handler

_handle = tick_ingest_handler()


@functions_framework.cloud_event
def handle(cloud_event: CloudEvent) -> None:
    _handle(cloud_event)
