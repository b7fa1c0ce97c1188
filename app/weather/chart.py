"""Geometry for the server-rendered SVG forecast chart.

All coordinates are computed here so the template only places elements; the
page needs no JavaScript and no inline styles (the site's CSP forbids them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

WIDTH, HEIGHT = 640, 320
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 24, 56
# Spelled out rather than strftime("%a") so labels do not depend on the locale.
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


@dataclass(frozen=True)
class Point:
    """One forecast day placed on the chart."""

    x: float
    y_max: float
    y_min: float
    temp_max: float
    temp_min: float
    max_label: str
    min_label: str
    weekday: str
    day_label: str
    iso: str


@dataclass(frozen=True)
class Chart:
    """Everything the template needs to draw the chart."""

    width: int
    height: int
    left: int
    right: float
    top: int
    bottom: float
    ticks: list[tuple[float, str]]
    points: list[Point]
    max_line: str
    min_line: str
    band: str


def _tick_step(span: float) -> int:
    """A round gridline spacing giving roughly four to eight lines."""
    for step in (1, 2, 5, 10):
        if span / step <= 8:
            return step
    return 20


def _whole_degrees(temp: float) -> str:
    """Chart label in whole degrees, rounding halves up (4.5 -> 5, not 4)."""
    # Whole degrees keep the chart calm; the table beside it shows 0.1 °C.
    return f"{math.floor(temp + 0.5)}°"


def build_chart(rows: Sequence[dict[str, Any]]) -> Chart:
    """Lay out forecast rows (``date``, ``temp_max``, ``temp_min``) on the chart."""
    highs = [float(r["temp_max"]) for r in rows]
    lows = [float(r["temp_min"]) for r in rows]
    step = _tick_step(max(highs) - min(lows) + 2)
    # Pad by a degree so points never sit on the frame, then snap to gridlines.
    lo = math.floor((min(lows) - 1) / step) * step
    hi = math.ceil((max(highs) + 1) / step) * step
    right, bottom = WIDTH - RIGHT, HEIGHT - BOTTOM

    def y(temp: float) -> float:
        return round(bottom - (temp - lo) / (hi - lo) * (bottom - TOP), 1)

    # Days sit in the middle of equal slots, like bars would.
    slot = (right - LEFT) / len(rows)
    points = []
    for i, row in enumerate(rows):
        day = date.fromisoformat(row["date"])
        points.append(
            Point(
                x=round(LEFT + slot * (i + 0.5), 1),
                y_max=y(row["temp_max"]),
                y_min=y(row["temp_min"]),
                temp_max=row["temp_max"],
                temp_min=row["temp_min"],
                max_label=_whole_degrees(row["temp_max"]),
                min_label=_whole_degrees(row["temp_min"]),
                weekday=WEEKDAYS[day.weekday()],
                day_label=f"{day.day} {MONTHS[day.month - 1]}",
                iso=row["date"],
            )
        )
    max_line = " ".join(f"{p.x},{p.y_max}" for p in points)
    min_line = " ".join(f"{p.x},{p.y_min}" for p in points)
    back = " ".join(f"{p.x},{p.y_min}" for p in reversed(points))
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        right=right,
        top=TOP,
        bottom=bottom,
        ticks=[(y(t), f"{t}°") for t in range(lo, hi + 1, step)],
        points=points,
        max_line=max_line,
        min_line=min_line,
        band=f"{max_line} {back}",
    )
