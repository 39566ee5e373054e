"""Warehouse sensor points: Modbus RTU meters sampled with a deadband."""
