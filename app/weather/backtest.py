"""Honest backtest: fit on 2012-2014, forecast every day of 2015.

For horizon ``h`` and each target day ``d`` in 2015, the forecaster stands at
``d - h`` and knows the observations up to that day (but the model parameters
stay those fitted on 2012-2014). Compared against two naive baselines:

* persistence: tomorrow (and every later day) equals the last observed value;
* climatology: the mean of that calendar day over the training years.

Run from ``app/`` with ``python -m weather.backtest``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from statistics import mean

from weather.model import TARGETS, Observation, fit, load_observations

HORIZONS = range(1, 8)
TEST_YEAR = 2015


@dataclass(frozen=True)
class Score:
    """Mean absolute errors (°C) for one target and one horizon."""

    target: str
    horizon: int
    model: float
    persistence: float
    climatology: float
    n: int


def run_backtest(observations: Sequence[Observation], test_year: int = TEST_YEAR) -> list[Score]:
    """Score the model and both baselines for every target and horizon."""
    train = [obs for obs in observations if obs.day.year < test_year]
    test = [obs for obs in observations if obs.day.year == test_year]
    by_day = {obs.day: obs for obs in observations}
    model = fit(train)

    # Keyed by (month, day) rather than day-of-year so leap years line up.
    sums: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for obs in train:
        acc = sums[(obs.day.month, obs.day.day)]
        acc[0] += obs.temp_max
        acc[1] += obs.temp_min
        acc[2] += 1

    def climatology(target: str, day: date) -> float:
        acc = sums[(day.month, day.day)]
        return acc[TARGETS.index(target)] / acc[2]

    scores = []
    for target in TARGETS:
        for h in HORIZONS:
            model_err, persist_err, clim_err = [], [], []
            for obs in test:
                anchor = by_day.get(obs.day - timedelta(days=h))
                if anchor is None:
                    continue
                actual = getattr(obs, target)
                last = getattr(anchor, target)
                guess = model.predict(target, obs.day, (anchor.day, last))
                model_err.append(abs(guess - actual))
                persist_err.append(abs(last - actual))
                clim_err.append(abs(climatology(target, obs.day) - actual))
            scores.append(Score(target, h, mean(model_err), mean(persist_err), mean(clim_err), len(model_err)))
    return scores


def seasonal_only_mae(observations: Sequence[Observation], test_year: int = TEST_YEAR) -> dict[str, float]:
    """MAE of the trend + seasonal curve alone, with no recent observation.

    This is what the app serves in practice: its data end in 2015, so by the
    time anyone asks, the AR(1) anomaly has long decayed to nothing.
    """
    model = fit([obs for obs in observations if obs.day.year < test_year])
    test = [obs for obs in observations if obs.day.year == test_year]
    return {
        target: mean(abs(model.seasonal(target, obs.day) - getattr(obs, target)) for obs in test) for target in TARGETS
    }


def format_table(scores: Sequence[Score]) -> str:
    """Markdown table: one row per horizon, MAE per target and method."""
    cell = {(s.target, s.horizon): s for s in scores}
    lines = [
        "| horizon (days) | max: model | max: persistence | max: climatology "
        "| min: model | min: persistence | min: climatology |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for h in sorted({s.horizon for s in scores}):
        values = []
        for target in TARGETS:
            s = cell[(target, h)]
            values += [s.model, s.persistence, s.climatology]
        lines.append(f"| {h} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    return "\n".join(lines)


def main() -> None:
    """Print the backtest table (MAE in °C) for the bundled data."""
    observations = load_observations()
    scores = run_backtest(observations)
    print(
        f"MAE (°C) of daily max/min temperature, fit 2012-{TEST_YEAR - 1}, "
        f"tested on {TEST_YEAR} ({scores[0].n} days per horizon)"
    )
    print(format_table(scores))
    seasonal = seasonal_only_mae(observations)
    print(
        f"Seasonal curve alone (no recent observation): max {seasonal['temp_max']:.2f}, min {seasonal['temp_min']:.2f}"
    )


if __name__ == "__main__":
    main()
