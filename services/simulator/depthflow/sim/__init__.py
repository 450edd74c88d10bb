"""The exchange simulator: a local Binance USD-M + Bybit v5 linear exchange.

``instruments``, ``book``, ``market``, ``history`` and ``accounts`` are pure (no I/O);
``streams``, ``binance``, ``bybit`` and ``app`` put them on the network.
"""
