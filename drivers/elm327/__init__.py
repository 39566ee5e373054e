"""Driver for OBD-II through an ELM327 adapter: driver.py, twin.py."""
