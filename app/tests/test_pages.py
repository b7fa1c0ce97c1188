"""The HTML page, static files and the reverse-proxy handling."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient


def test_index_renders_svg_chart_with_seven_days(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<svg" in html
    assert html.count('class="point point-max"') == 7
    assert html.count('class="point point-min"') == 7
    # The day after the pinned "today" (Sun 30 Jun 2024) comes first.
    assert '<time datetime="2024-07-01">Mon 1 Jul</time>' in html
    assert html.count('<th scope="row">') == 7


def test_index_has_no_inline_script_or_style(client: FlaskClient) -> None:
    # The production CSP (default-src 'self') would block them.
    html = client.get("/").get_data(as_text=True)
    assert "style=" not in html
    assert "<style" not in html
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag
    assert "http://" not in html.replace("http://localhost/", "")
    assert "https://" not in html


def test_footer_shows_app_version(monkeypatch: pytest.MonkeyPatch, client: FlaskClient) -> None:
    assert '<span class="version">dev</span>' in client.get("/").get_data(True)
    monkeypatch.setenv("APP_VERSION", "1.2.3-abc")
    from weather import create_app

    html = create_app({"TESTING": True}).test_client().get("/").get_data(True)
    assert '<span class="version">1.2.3-abc</span>' in html


def test_static_assets_are_served(client: FlaskClient, app: Flask) -> None:
    html = client.get("/").get_data(as_text=True)
    assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', html)
    # Plain url_for links: on the server, each URL carries its file's content hash.
    assert "/static/style.css" in assets
    for url in assets:
        # Static responses stream an open file; the context manager closes it.
        with client.get(url) as response:
            assert response.status_code == 200, url
    with client.get("/static/style.css") as css:
        assert css.mimetype == "text/css"
        assert b".line-max" in css.data
    # nginx serves /static/ straight from this folder, so it must be there.
    assert app.static_folder is not None
    assert app.static_url_path == "/static"
    assert app.static_folder.endswith("weather/static")


def test_proxy_headers_are_honoured(client: FlaskClient) -> None:
    plain = client.get("/").get_data(as_text=True)
    assert '<link rel="canonical" href="http://localhost/">' in plain
    proxied = client.get(
        "/",
        headers={
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "weather.example.org",
            "X-Forwarded-For": "203.0.113.7",
        },
    ).get_data(as_text=True)
    assert '<link rel="canonical" href="https://weather.example.org/">' in proxied


def test_proxy_fix_sets_remote_addr(app: Flask) -> None:
    from flask import request

    @app.get("/_test/ip")
    def ip() -> str:
        return request.remote_addr or ""

    client = app.test_client()
    # Only the last hop (the one nginx appended) is trusted.
    headers = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
    assert client.get("/_test/ip", headers=headers).get_data(True) == "203.0.113.7"


def test_unknown_page_is_html_404(client: FlaskClient) -> None:
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert response.mimetype == "text/html"


def test_forecasts_are_shared_cacheable_until_the_day_changes(client: FlaskClient) -> None:
    for path in ("/", "/api/forecast"):
        response = client.get(path)
        assert response.cache_control.public, path
        assert response.cache_control.max_age == 0, path  # browsers ask again: a deploy shows at once
        assert 0 < (response.cache_control.s_maxage or 0) <= 86400, path
    assert client.get("/healthz").cache_control.max_age is None
