"""Driver for NMEA 0183 GNSS receivers: driver.py, twin.py."""
