"""lockoutd: locks ZITADEL users whose login failures cross a rule's threshold.

The package is laid out as the pipeline it runs::

    source (Kafka) -> decode (bytes to Event) -> rules (what to count)
        -> decide (sliding windows, decisions) -> act (ZITADEL) -> report (audit, metrics, logs)
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
