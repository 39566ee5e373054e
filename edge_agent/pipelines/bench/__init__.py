"""Return-inspection bench: capture, quality gate, preprocessing, OCR, barcodes, fields, validation, review."""
