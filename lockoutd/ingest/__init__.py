"""``lockoutd ingest``: ZITADEL Actions v2 webhooks in, Kafka records out.

ZITADEL has no Kafka output. This endpoint is the glue: a target of type ``restAsync`` (or
``restWebhook``) posts each event body here; the ``ZITADEL-Signature`` header is verified and the
body is published unchanged to ``ingest.topic``, keyed by the user id (``aggregateID``), where the
daemon reads it with ``kafka.formats: {<topic>: zitadel}``.
"""
