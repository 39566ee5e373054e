"""Driver for serial scales (MT-SICS, continuous ASCII): driver.py, twin.py."""
