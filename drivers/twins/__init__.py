"""Twins: programs that speak a device's real wire protocol on a pseudo-terminal."""
