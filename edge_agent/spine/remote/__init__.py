"""Signed commands from central: message format, nonce store, processor."""
