"""A local Kite Connect v3 sandbox that the official, unmodified `kiteconnect` client can talk to.

REST routes, the KiteTicker binary WebSocket, order postbacks and fault injection, on loopback
ports, for integration tests and local runs. See `KiteSandbox`.
"""

from ._common import IST, KiteError
from .config import SandboxConfig
from .exchange import OrderEvent
from .instruments import Instrument, default_instruments, equity, future, index, instruments_csv
from .portfolio import Holding
from .postback import PostbackDelivery, postback_checksum
from .server import KiteSandbox
from .session import session_checksum

__all__ = [
    "IST",
    "Holding",
    "Instrument",
    "KiteError",
    "KiteSandbox",
    "OrderEvent",
    "PostbackDelivery",
    "SandboxConfig",
    "default_instruments",
    "equity",
    "future",
    "index",
    "instruments_csv",
    "postback_checksum",
    "session_checksum",
]
