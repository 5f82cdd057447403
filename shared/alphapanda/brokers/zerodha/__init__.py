"""Zerodha through Kite Connect: the only package that talks to Kite (always via `kiteconnect`).

    trader.py        ZerodhaTrader, the trading-engine stage of zerodha brokers (claims, lookups)
    ledger.py        the signal claim's states in Redis (placing / unknown / done)
    orders.py        pure: order tag, place_order parameters, the order context
    rate_limit.py    OrderRateLimiter: one Lua sliding window per Kite app, for the whole deployment
    errors.py        what a Kite failure means (rejected, token, throttled, unknown)
    session.py       login, the access token in Redis, halt on a refused token, resume on login
    client.py        the KiteConnect client, built one way (debug logging off)
    updates.py       pure: Kite order updates -> fills, cancels, failures, updates
    postbacks.py     OrderUpdateProcessor (claimed once), the postback endpoint, ticker updates
    ticker_feed.py   KiteTickerFeed: live ticks -> MarketTick events; run_kite_feed
    instruments.py   the instrument master in Redis; sync_instruments
    reconcile.py     books vs Kite positions -> breaks and an Alert

Submodules are imported on use: `kiteconnect` pulls in Twisted, which paper-only processes
never need.
"""
