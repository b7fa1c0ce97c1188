"""JSON endpoints: /api/forecast and /healthz."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from flask.testing import FlaskClient
from weather import create_app


def test_forecast_defaults_to_seven_days(client: FlaskClient) -> None:
    response = client.get("/api/forecast")
    assert response.status_code == 200
    body = response.get_json()
    assert list(body) == ["location", "unit", "generated", "method", "days"]
    assert body["location"] == "Seattle, WA"
    assert body["unit"] == "celsius"
    assert body["generated"] == "2024-06-30"
    assert isinstance(body["method"], str) and body["method"]
    assert [d["date"] for d in body["days"]] == [(date(2024, 7, 1) + timedelta(days=i)).isoformat() for i in range(7)]
    for day in body["days"]:
        assert set(day) == {"date", "temp_max", "temp_min"}
        for key in ("temp_max", "temp_min"):
            assert isinstance(day[key], float)
            assert round(day[key], 1) == day[key]
        assert day["temp_max"] > day["temp_min"]
        # Early July in Seattle: highs in the twenties, lows in the teens.
        assert 18 < day["temp_max"] < 32
        assert 8 < day["temp_min"] < 18


@pytest.mark.parametrize("days", [1, 3, 14])
def test_forecast_accepts_days_in_range(client: FlaskClient, days: int) -> None:
    response = client.get(f"/api/forecast?days={days}")
    assert response.status_code == 200
    assert len(response.get_json()["days"]) == days


def test_forecast_is_same_as_page_data(client: FlaskClient) -> None:
    first = client.get("/api/forecast?days=3").get_json()["days"]
    assert client.get("/api/forecast?days=14").get_json()["days"][:3] == first


@pytest.mark.parametrize(
    "raw",
    ["0", "15", "-1", "abc", "3.5", "", " 7", "+7", "1e1", "1_0", "٣", "99999999"],
)
def test_forecast_rejects_bad_days(client: FlaskClient, raw: str) -> None:
    response = client.get("/api/forecast", query_string={"days": raw})
    assert response.status_code == 400
    assert response.is_json
    message = response.get_json()["error"]
    assert "days" in message
    assert repr(raw) in message
    assert "1 to 14" in message


def test_unknown_api_route_is_json_404(client: FlaskClient) -> None:
    response = client.get("/api/nope")
    assert response.status_code == 404
    assert "error" in response.get_json()


def test_wrong_method_on_api_is_json_405(client: FlaskClient) -> None:
    response = client.post("/api/forecast")
    assert response.status_code == 405
    assert "error" in response.get_json()


def test_healthz_defaults_to_dev(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "version": "dev"}


def test_healthz_reports_app_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_VERSION", "2025.06.1")
    client = create_app({"TESTING": True}).test_client()
    assert client.get("/healthz").get_json() == {
        "status": "ok",
        "version": "2025.06.1",
    }


def test_today_defaults_to_server_clock() -> None:
    client = create_app({"TESTING": True}).test_client()
    body = client.get("/api/forecast?days=1").get_json()
    # Allow for the test running across midnight.
    assert body["generated"] in {
        date.today().isoformat(),
        (date.today() - timedelta(days=1)).isoformat(),
    }
    generated = date.fromisoformat(body["generated"])
    assert body["days"][0]["date"] == (generated + timedelta(days=1)).isoformat()
