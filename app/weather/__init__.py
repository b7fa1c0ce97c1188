"""Neighbourhood weather: a small Flask app forecasting Seattle temperatures."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from weather.model import TemperatureModel, fit, load_observations
from weather.views import bp


@lru_cache(maxsize=1)
def default_model() -> TemperatureModel:
    """Fit once per process on the bundled CSV (takes a few tens of ms)."""
    return fit(load_observations())


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """App factory.

    Config keys of our own: ``TODAY`` (a ``date`` to pin "today", for tests;
    ``None`` means the server's date at request time) and ``APP_VERSION``
    (defaults to the ``APP_VERSION`` environment variable, else ``"dev"``).
    """
    app = Flask(__name__)
    app.config.from_mapping(
        TODAY=None,
        APP_VERSION=os.environ.get("APP_VERSION", "dev"),
    )
    if config:
        app.config.update(config)
    # Keep response keys in the documented order rather than sorted.
    app.json.sort_keys = False  # type: ignore[attr-defined]

    # nginx sets exactly one hop of X-Forwarded-For/-Proto/-Host; trusting more
    # would let clients spoof their address or our external URLs.
    app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
        app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_prefix=0
    )

    # Fit at start-up, not on the first request, so a broken data file fails
    # the deploy's health check instead of a visitor's page.
    app.extensions["weather_model"] = default_model()

    app.register_blueprint(bp)

    @app.errorhandler(HTTPException)
    def api_errors_as_json(error: HTTPException) -> Any:
        # API clients expect JSON even for 404/405; pages keep Flask's HTML.
        if request.path == "/api" or request.path.startswith("/api/"):
            return jsonify(error=error.description), error.code or 500
        return error

    @app.context_processor
    def inject_version() -> dict[str, str]:
        return {"app_version": app.config["APP_VERSION"]}

    return app
