"""Reporting: Prometheus metrics, structured logs, the audit topic and the health endpoints."""
