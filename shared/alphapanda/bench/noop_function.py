"""A functions-framework CloudEvent function that does nothing: the HTTP bench's baseline."""

import functions_framework
from cloudevents.http import CloudEvent


@functions_framework.cloud_event
def handle(cloud_event: CloudEvent) -> None:
    del cloud_event
