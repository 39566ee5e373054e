"""The central side: device registry, verified ingest of device streams, anomalies, queries and a fleet simulator."""
