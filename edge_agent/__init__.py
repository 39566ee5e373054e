"""edge-agent: signed, durable records from return-inspection benches, trucks and sensor points."""

__version__ = "0.1.0"
