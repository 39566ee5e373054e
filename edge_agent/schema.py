"""Helpers for config models: `Expect`, field metadata that phrases what a key expects in error messages."""

from __future__ import annotations


class Expect:
    """Field metadata: how to say what a field expects, in an error message."""

    def __init__(self, text: str) -> None:
        self.text = text
