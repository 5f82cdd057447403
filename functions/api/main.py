"""Read API: each broker's summary, positions and order status, and the Kite login callback.

Serve with `functions-framework --source functions/api/main.py --target handle --signature-type
http`; it reads ALPHAPANDA_REDIS__URL and ALPHAPANDA_BROKERS. Routes: alphapanda.runtime.api.
"""

import functions_framework
from flask import Request

from alphapanda.runtime.api import LazyReadApi

_api = LazyReadApi()


@functions_framework.http
def handle(request: Request) -> tuple[str, int, dict[str, str]]:
    response = _api(request.method, request.path, request.args)
    return response.text, response.status, {"Content-Type": "application/json"}
