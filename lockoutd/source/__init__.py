"""Sources: where authentication events come from (Kafka) and where records are published."""
