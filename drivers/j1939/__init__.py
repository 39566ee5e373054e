"""SAE J1939 over CAN: listen-only driver (python-can: SocketCAN, slcan), PGN/SPN table decoding, BAM and RTS/CTS."""
