"""Backtests: recorded market data replayed through the live feature, strategy, risk and
fill-model code, in event time, deterministically."""
