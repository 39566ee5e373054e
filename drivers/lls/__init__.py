"""Driver for Omnicomm LLS fuel level sensors: driver.py, twin.py."""
