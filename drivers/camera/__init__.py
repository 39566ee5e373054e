"""Driver for bench cameras: folder, OpenCV, picamera2: driver.py, twin.py."""
