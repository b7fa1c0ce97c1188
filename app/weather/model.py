"""Daily max/min temperature model for Seattle, in pure Python.

Per target (``temp_max`` and ``temp_min``) we fit, by ordinary least squares,

    y = a + b*t + sum_{k=1..3} (c_k cos(2πk·doy/365.25) + d_k sin(2πk·doy/365.25))

where ``t`` is years since the first observation. The residuals of that fit are
strongly autocorrelated day to day, so an AR(1) coefficient ``phi`` is fitted on
them: a forecast ``h`` days after the last observation adds ``phi**h`` times the
last observed anomaly. That helps for the next few days and fades to the pure
seasonal curve after a couple of weeks.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

DATA_PATH = Path(__file__).parent / "data" / "seattle-weather.csv"
TARGETS = ("temp_max", "temp_min")
HARMONICS = 3
YEAR_DAYS = 365.25
METHOD = "seasonal harmonic regression (3 harmonics + trend, OLS) with AR(1) anomaly"


@dataclass(frozen=True)
class Observation:
    """One day of the data set (only the columns the model uses)."""

    day: date
    temp_max: float
    temp_min: float


def load_observations(path: Path = DATA_PATH) -> list[Observation]:
    """Read the CSV (dates look like ``2012/01/01``), sorted by date."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [
            Observation(
                day=date(*(int(part) for part in row["date"].split("/"))),
                temp_max=float(row["temp_max"]),
                temp_min=float(row["temp_min"]),
            )
            for row in csv.DictReader(fh)
        ]
    rows.sort(key=lambda obs: obs.day)
    return rows


def solve(matrix: Sequence[Sequence[float]], rhs: Sequence[float]) -> list[float]:
    """Solve ``matrix @ x = rhs`` by Gaussian elimination with partial pivoting."""
    n = len(rhs)
    aug = [[*row, value] for row, value in zip(matrix, rhs, strict=True)]
    for col in range(n):
        # Pivot on the largest entry so round-off stays small.
        pivot = max(range(col, n), key=lambda r: abs(aug[r][col]))
        if abs(aug[pivot][col]) < 1e-12:
            raise ValueError("singular system: features are linearly dependent")
        aug[col], aug[pivot] = aug[pivot], aug[col]
        for r in range(col + 1, n):
            factor = aug[r][col] / aug[col][col]
            for c in range(col, n + 1):
                aug[r][c] -= factor * aug[col][c]
    x = [0.0] * n
    for r in reversed(range(n)):
        tail = sum(aug[r][c] * x[c] for c in range(r + 1, n))
        x[r] = (aug[r][n] - tail) / aug[r][r]
    return x


def least_squares(rows: Sequence[Sequence[float]], ys: Sequence[float]) -> list[float]:
    """OLS coefficients via the normal equations (fine for 8 well-scaled columns)."""
    p = len(rows[0])
    xtx = [[0.0] * p for _ in range(p)]
    xty = [0.0] * p
    for row, y in zip(rows, ys, strict=True):
        for i in range(p):
            xty[i] += row[i] * y
            for j in range(i, p):
                xtx[i][j] += row[i] * row[j]
    for i in range(p):
        for j in range(i):
            xtx[i][j] = xtx[j][i]
    return solve(xtx, xty)


@dataclass(frozen=True)
class TargetFit:
    """Fitted parameters for one target column."""

    coef: tuple[float, ...]
    phi: float
    last_value: float


@dataclass(frozen=True)
class TemperatureModel:
    """Fitted model for both targets; immutable, so safe to share across threads."""

    origin: date
    last_day: date
    fits: dict[str, TargetFit]

    def features(self, day: date) -> list[float]:
        """Design row for ``day``; the trend is held at its last fitted value."""
        # Four years cannot support extrapolating a linear trend for a decade,
        # so dates after the data get the trend level of the last observed day.
        years = (min(day, self.last_day) - self.origin).days / YEAR_DAYS
        angle = 2 * math.pi * day.timetuple().tm_yday / YEAR_DAYS
        row = [1.0, years]
        for k in range(1, HARMONICS + 1):
            row += [math.cos(k * angle), math.sin(k * angle)]
        return row

    def seasonal(self, target: str, day: date) -> float:
        """Trend + seasonal cycle, without the short-term anomaly."""
        coef = self.fits[target].coef
        return sum(c * x for c, x in zip(coef, self.features(day), strict=True))

    def predict(self, target: str, day: date, anchor: tuple[date, float] | None = None) -> float:
        """Forecast ``target`` on ``day`` given the latest observation ``anchor``.

        ``anchor`` is ``(observed_day, observed_value)``; by default the last row
        of the training data. Its anomaly decays by ``phi`` per day of horizon.
        """
        fit = self.fits[target]
        anchor_day, anchor_value = anchor or (self.last_day, fit.last_value)
        horizon = (day - anchor_day).days
        base = self.seasonal(target, day)
        if horizon <= 0:
            return base
        anomaly = anchor_value - self.seasonal(target, anchor_day)
        # phi ** horizon underflows to 0.0 for far-away dates, which is intended.
        return base + fit.phi**horizon * anomaly

    def forecast(self, days: Iterable[date]) -> list[dict[str, float | str]]:
        """Rows for the API/page: ISO date plus both targets rounded to 0.1 °C."""
        return [
            {"date": d.isoformat()} | {target: round(self.predict(target, d), 1) for target in TARGETS} for d in days
        ]


def _ar1(residuals: Sequence[float], days: Sequence[date]) -> float:
    """Lag-1 coefficient of the residuals, using consecutive-day pairs only."""
    num = den = 0.0
    for i in range(1, len(residuals)):
        if (days[i] - days[i - 1]).days == 1:
            num += residuals[i] * residuals[i - 1]
            den += residuals[i - 1] ** 2
    return num / den if den else 0.0


def fit(observations: Sequence[Observation]) -> TemperatureModel:
    """Fit both targets on ``observations`` (must be sorted by date)."""
    if len(observations) < 2 * (2 + 2 * HARMONICS):
        raise ValueError("not enough observations to fit the model")
    days = [obs.day for obs in observations]
    shell = TemperatureModel(origin=days[0], last_day=days[-1], fits={})
    rows = [shell.features(d) for d in days]
    fits = {}
    for target in TARGETS:
        ys = [getattr(obs, target) for obs in observations]
        coef = least_squares(rows, ys)
        residuals = [y - sum(c * x for c, x in zip(coef, row, strict=True)) for y, row in zip(ys, rows, strict=True)]
        fits[target] = TargetFit(tuple(coef), _ar1(residuals, days), ys[-1])
    return TemperatureModel(origin=days[0], last_day=days[-1], fits=fits)
