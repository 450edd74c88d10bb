"""The collector: Binance USD-M and Bybit v5 linear order books into Kafka and PostgreSQL."""
