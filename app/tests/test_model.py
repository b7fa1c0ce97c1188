"""The forecasting model and its backtest."""

from __future__ import annotations

from datetime import date

import pytest
from weather.backtest import run_backtest, seasonal_only_mae
from weather.model import (
    TARGETS,
    TemperatureModel,
    fit,
    load_observations,
    solve,
)


@pytest.fixture(scope="module")
def model() -> TemperatureModel:
    return fit(load_observations())


def test_data_is_the_full_seattle_record() -> None:
    observations = load_observations()
    assert len(observations) == 1461
    assert observations[0].day == date(2012, 1, 1)
    assert observations[-1].day == date(2015, 12, 31)
    assert observations[-1].temp_max == 5.6 and observations[-1].temp_min == -2.1


def test_solve_matches_known_solution() -> None:
    # 2x + y = 5, x + 3y = 10  ->  x = 1, y = 3 (needs a row swap: 0 pivot).
    x = solve([[0.0, 1.0, 1.0], [2.0, 1.0, 0.0], [1.0, 3.0, 0.0]], [4.0, 5.0, 10.0])
    assert x == pytest.approx([1.0, 3.0, 1.0])
    with pytest.raises(ValueError):
        solve([[1.0, 2.0], [2.0, 4.0]], [1.0, 2.0])


def test_fit_is_deterministic(model: TemperatureModel) -> None:
    again = fit(load_observations())
    assert again == model
    days = [date(2030, 1, 1), date(2030, 7, 1)]
    assert again.forecast(days) == model.forecast(days)


def test_summer_is_warmer_than_winter(model: TemperatureModel) -> None:
    for target in TARGETS:
        july = model.predict(target, date(2027, 7, 20))
        january = model.predict(target, date(2027, 1, 20))
        assert july > january + 8


def test_highs_above_lows_all_year(model: TemperatureModel) -> None:
    for row in model.forecast(date(2026, 1, 1).fromordinal(o) for o in _year(2026)):
        assert row["temp_max"] > row["temp_min"]


def test_trend_is_held_after_the_data(model: TemperatureModel) -> None:
    # Same day of year in non-leap years: the trend moves within the data...
    for target in TARGETS:
        early = model.seasonal(target, date(2013, 7, 1))
        assert model.seasonal(target, date(2014, 7, 1)) != early
        # ...and stays put after it, so 2027 and 2039 get the same forecast.
        later = model.seasonal(target, date(2027, 7, 1))
        assert model.seasonal(target, date(2039, 7, 1)) == later


def test_short_horizon_uses_latest_anomaly(model: TemperatureModel) -> None:
    # 2015-12-31 was a cold day (-2.1 °C low): the next day's forecast is
    # pulled below the seasonal curve, and the pull fades with the horizon.
    seasonal = model.seasonal("temp_min", date(2016, 1, 1))
    assert model.predict("temp_min", date(2016, 1, 1)) < seasonal - 2
    far = date(2016, 2, 1)
    assert model.predict("temp_min", far) == pytest.approx(model.seasonal("temp_min", far), abs=0.01)


def test_model_beats_persistence_from_three_days_out() -> None:
    scores = run_backtest(load_observations())
    assert len(scores) == 2 * 7
    for score in scores:
        assert score.n == 365
        if score.horizon >= 3:
            assert score.model < score.persistence, score
        # Fitting the seasonal curve beats averaging three noisy years per day.
        assert score.model < score.climatology, score


def test_served_forecast_beats_both_baselines_a_week_out() -> None:
    # Years after the data end the app serves the seasonal curve alone.
    observations = load_observations()
    seasonal = seasonal_only_mae(observations)
    for score in run_backtest(observations):
        if score.horizon == 7:
            assert seasonal[score.target] < min(score.persistence, score.climatology)


def _year(year: int) -> range:
    return range(date(year, 1, 1).toordinal(), date(year + 1, 1, 1).toordinal())
