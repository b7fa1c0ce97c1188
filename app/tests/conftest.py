"""Shared fixtures; also puts ``app/`` on sys.path so ``import weather`` works
whether pytest is started from ``app/`` or from the repository root."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

APP_DIR = Path(__file__).resolve().parent.parent
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

from weather import create_app  # noqa: E402  (needs the sys.path line above)

# A fixed "today" keeps every test independent of the machine's clock.
TODAY = date(2024, 6, 30)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    monkeypatch.delenv("APP_VERSION", raising=False)
    yield create_app({"TESTING": True, "TODAY": TODAY})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
