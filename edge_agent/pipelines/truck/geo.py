"""Geodesic distance on WGS84 and the words for a place: geofence names for routes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from geographiclib.geodesic import Geodesic

_WGS84 = Geodesic.WGS84
_DISTANCE = Geodesic.DISTANCE


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Geodesic (ellipsoidal, Karney) distance in metres between two WGS84 points."""
    if lat1 == lat2 and lon1 == lon2:
        return 0.0
    return float(_WGS84.Inverse(lat1, lon1, lat2, lon2, _DISTANCE)["s12"])


class _Fence(Protocol):
    name: str
    lat: float
    lon: float
    radius_m: float


def place_name(lat: float, lon: float, fences: Sequence[_Fence]) -> str:
    """The name of the nearest geofence containing the point, else "lat,lon" to 3 decimals (~100 m)."""
    best: tuple[float, str] | None = None
    for f in fences:
        d = distance_m(lat, lon, f.lat, f.lon)
        if d <= f.radius_m and (best is None or d < best[0]):
            best = (d, f.name)
    return best[1] if best is not None else f"{lat:.3f},{lon:.3f}"


def route_words(route_format: str, start: str, end: str) -> str:
    """ "从{start}到{end}" with the places filled in (plain replacement: other braces stay as they are)."""
    return route_format.replace("{start}", start).replace("{end}", end)
