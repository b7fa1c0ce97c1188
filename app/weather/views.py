"""HTTP endpoints: the HTML page, the JSON forecast and the health check."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, make_response, render_template, request

from weather.chart import build_chart
from weather.model import METHOD, TemperatureModel

bp = Blueprint("main", __name__)

LOCATION = "Seattle, WA"
DEFAULT_DAYS = 7
MAX_DAYS = 14


def today() -> date:
    """The app's notion of today: pinned by config (tests), else the server's clock."""
    pinned: date | None = current_app.config.get("TODAY")
    return pinned if pinned is not None else date.today()


def _forecast(days: int) -> tuple[str, list[dict[str, Any]]]:
    """Generated date (ISO) and the forecast rows for the ``days`` after it."""
    model: TemperatureModel = current_app.extensions["weather_model"]
    start = today()
    dates = [start + timedelta(days=i) for i in range(1, days + 1)]
    return start.isoformat(), model.forecast(dates)


def cacheable_until_tomorrow(response: Response) -> Response:
    """Mark a forecast cacheable by shared caches until the day (and so the forecast) changes.

    The server's nginx keeps such answers (s-maxage) for everyone who sends no cookie or
    credentials, and empties its cache when a new release goes live; browsers ask again
    each time (max-age=0), so a deploy's new page reaches them at once.
    """
    now = datetime.now()
    tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time())
    response.cache_control.public = True
    response.cache_control.max_age = 0
    response.cache_control.s_maxage = max(1, int((tomorrow - now).total_seconds()))
    return response


@bp.get("/")
def index() -> Response:
    generated, rows = _forecast(DEFAULT_DAYS)
    page = render_template(
        "index.html",
        location=LOCATION,
        generated=generated,
        rows=rows,
        chart=build_chart(rows),
        method=METHOD,
    )
    return cacheable_until_tomorrow(make_response(page))


@bp.get("/api/forecast")
def api_forecast() -> Any:
    raw = request.args.get("days")
    if raw is None:
        days = DEFAULT_DAYS
    # A strict ASCII-digit match: int() alone would accept " 7", "+7", "1_0"
    # and non-ASCII digits.
    elif re.fullmatch(r"[0-9]{1,3}", raw) and 1 <= int(raw) <= MAX_DAYS:
        days = int(raw)
    else:
        shown = raw if len(raw) <= 40 else raw[:40] + "…"
        message = f"invalid value for parameter 'days': {shown!r}; expected an integer from 1 to {MAX_DAYS}"
        return jsonify(error=message), 400
    generated, rows = _forecast(days)
    return cacheable_until_tomorrow(
        jsonify(location=LOCATION, unit="celsius", generated=generated, method=METHOD, days=rows)
    )


@bp.get("/healthz")
def healthz() -> Any:
    # Deliberately touches nothing but config: load balancers call it often.
    return jsonify(status="ok", version=current_app.config["APP_VERSION"])
