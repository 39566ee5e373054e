"""The spine: records, keys, clock, chain writer, outbox, MQTT sync, verification, signed commands."""
