"""Executor service: pre-trade risk, order placement and reconciliation.

The modules here are the pure domain core (no I/O): ``fsm``, ``ids``, ``risk``, ``ratelimit``,
``breaker``, ``fills``, ``positions`` and ``reconcile``.
"""
