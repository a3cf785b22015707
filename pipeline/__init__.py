"""Roomstream: a Kafka-backed pipeline that persists Matrix room events."""

__version__ = "0.1.0"
