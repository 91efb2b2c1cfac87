"""Measuring speed: throughput tables and the anatomy of a wake step."""
