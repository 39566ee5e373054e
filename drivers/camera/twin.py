"""An industrial camera that drops image files into a folder (FTP/SMB), written atomically or, like FTP, in place."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2


class FolderCameraTwin:
    """Drops images into `folder`: temp file + rename (atomic), or in place in chunks when atomic=False.

    `drop(image_or_path)` adds one; `play(paths, interval_s)` drops a list in the background.
    """

    def __init__(self, folder: str | os.PathLike[str], *, prefix: str = "IMG", atomic: bool = True) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.atomic = atomic
        self.dropped: list[Path] = []
        self._n = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def drop(self, image: Any, ext: str = ".jpg") -> Path:
        """Drop one image: a BGR array (encoded as `ext`) or the path of an image file (copied byte for byte)."""
        if isinstance(image, (str, os.PathLike)):
            src = Path(image)
            return self.drop_bytes(src.read_bytes(), src.suffix or ext)
        ok, buf = cv2.imencode(ext, image)
        if not ok:
            raise ValueError(f"cannot encode image as {ext}")
        return self.drop_bytes(buf.tobytes(), ext)

    def drop_bytes(self, data: bytes, ext: str = ".jpg", name: str | None = None) -> Path:
        """Drop raw file bytes (also broken ones) under a fresh camera-style name."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._n += 1
        final = self.folder / (name or f"{self.prefix}_{int(time.time() * 1000)}_{self._n:05d}{ext}")
        if self.atomic:
            tmp = final.with_name("." + final.name + ".tmp")
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        else:
            # An FTP server writes the file under its final name as the upload arrives.
            with final.open("wb") as f:
                for i in range(0, len(data), 16384):
                    f.write(data[i : i + 16384])
                    f.flush()
                    time.sleep(0.002)
        self.dropped.append(final)
        return final

    def play(self, images: Iterable[Any], interval_s: float = 0.5) -> FolderCameraTwin:
        """Drop each image (array or path) every interval_s in a background thread."""
        items = list(images)

        def run() -> None:
            for item in items:
                if self._stop.wait(interval_s):
                    return
                self.drop(item)

        self._thread = threading.Thread(target=run, name="twin-folder-camera", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
