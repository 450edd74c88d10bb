"""Shared building blocks of every depthflow service: settings, schemas, Kafka, PostgreSQL,
metrics, lifecycle, logging and test helpers."""
