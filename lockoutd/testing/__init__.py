"""Test and demo infrastructure: a local Kafka-protocol broker, the ZITADEL emulator, a daemon
process runner. Never imported by the daemon itself."""
