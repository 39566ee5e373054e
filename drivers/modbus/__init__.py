"""Driver for Modbus RTU meters: driver.py, twin.py."""
