"""Driver for RF barcode scanners: serial and HID: driver.py, twin.py."""
