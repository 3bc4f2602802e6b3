"""``lockoutd replay``: the daemon's pipeline in shadow mode over recorded events.

Records from a JSON-lines file, standard input or a stretch of a Kafka topic go through the
daemon's own :class:`lockoutd.daemon.Pipeline` with ``engine.dry_run`` on and the event time as
its clock, so a backtest decides exactly what the daemon would have decided, and calls nothing.
"""
