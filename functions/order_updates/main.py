"""Order updates: Kite postbacks over HTTP -> zerodha.orders.{updated,filled,cancelled,failed}.

Serve with `functions-framework --source functions/order_updates/main.py --target handle
--signature-type http` and register its HTTPS URL as the Kite app's postback URL. A body
whose checksum is not Kite's is refused with 401 before anything is read or written.
"""

import functions_framework
from flask import Request

from alphapanda.brokers.zerodha.postbacks import postback_endpoint

_handle = postback_endpoint()


@functions_framework.http
def handle(request: Request) -> tuple[str, int]:
    response = _handle(request.get_data())
    return response.body, response.status
