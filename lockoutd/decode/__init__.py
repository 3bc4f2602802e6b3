"""Decoding: raw Kafka record values into :class:`~lockoutd.decode.event.Event`."""
