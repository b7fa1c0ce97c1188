"""The benchmark's breakdown switches pieces off by editing the rendered files: each edit must still
find what it removes, in the files as the project renders them (the bench stops on one that does not)."""

from __future__ import annotations

import re

import pytest

from core.render import render_gunicorn_conf, render_nginx_site
from core.settings import parse_settings
from rehearsal.bench import (
    ALL_PIECES,
    BREAKDOWN_ENDPOINTS,
    CACHED_ROWS,
    ENDPOINTS,
    PIECES,
    Cell,
    Piece,
    Report,
    edited,
    load_subnet,
    render,
)
from tests.conftest import example_public_key
from tests.pulumi_harness import PROJECT_DIR

#: As the benchmark deploys: the example app, plain HTTP.
SETTINGS = parse_settings(
    {"sshPublicKeys": [example_public_key("b")], "adminCidrs": ["203.0.113.7/32"], "https": False}, PROJECT_DIR
)


@pytest.mark.parametrize("piece", [*PIECES, ALL_PIECES], ids=lambda piece: piece.name)
def test_each_piece_switches_off_what_it_names_and_nothing_else(piece: Piece) -> None:
    site = render_nginx_site(SETTINGS)
    conf = render_gunicorn_conf(SETTINGS)

    edited_site = edited(site, piece.site, "the site")
    edited_conf = edited(conf, piece.gunicorn, "gunicorn.conf.py")

    assert (edited_site != site) == bool(piece.site)
    assert (edited_conf != conf) == bool(piece.gunicorn)
    # What the uncached path needs stays: the proxying to Gunicorn, the candidate's server block.
    assert f"proxy_pass http://{SETTINGS.app.name}_gunicorn;" in edited_site
    assert edited_site.count("server {") == site.count("server {")
    compile(edited_conf, "gunicorn.conf.py", "exec")


def test_all_of_them_leaves_none_of_the_pieces() -> None:
    site = edited(render_nginx_site(SETTINGS), ALL_PIECES.site, "the site")
    conf = edited(render_gunicorn_conf(SETTINGS), ALL_PIECES.gunicorn, "gunicorn.conf.py")

    for directive in (
        "limit_req zone=",
        "proxy_cache ",
        "proxy_cache_bypass",
        "set_header X-Request-ID",
        "X-Frame-Options",
    ):
        assert directive not in site
    assert re.search(r"access_log /var/log/nginx/", site) is None
    assert "\ndef pre_request(" not in conf and "\ndef post_request(" not in conf


def test_an_edit_that_matches_nothing_stops_the_benchmark() -> None:
    with pytest.raises(RuntimeError, match="matches nothing in the site"):
        edited("server {}", ((r"limit_req zone=[^;]*;", ""),), "the site")


def test_load_hosts_have_subnets_of_their_own() -> None:
    subnets = {load_subnet(index)[0] for index in range(320)}
    assert len(subnets) == 320
    assert load_subnet(64) == ("10.214.1.0/30", "10.214.1.1", "10.214.1.2")


def cell(stack: str, endpoint: str, rps: float, round_: int = 0) -> Cell:
    return Cell(stack, endpoint, rps, 1.0, 2.0, 0, 0, int(rps * 10), round=round_)


def test_the_breakdown_gives_medians_of_its_rounds_and_says_how_far_the_stack_as_deployed_moved() -> None:
    deployed = {1: 1000, 2: 800, 3: 900}
    without_log = {1: 1100, 2: 800, 3: 1200}
    breakdown = [
        cell(name, endpoint, values[r], r)
        for r in (1, 2, 3)
        for name, values in (("as deployed", deployed), ("without access log", without_log))
        for endpoint in BREAKDOWN_ENDPOINTS
    ]
    report = Report(cells=[cell("this project", e, 1000) for e in ENDPOINTS], breakdown=breakdown)

    text = render(report)

    # 1000 to 800 over a median of 900; ratios within each round 1.10, 1.00, 1.33.
    assert "the stack as deployed moved by 22% on `/`, 22% on `/api/forecast`" in text
    assert "| as deployed | 900 | 2.0 | 1.00 | 900 | 2.0 | 1.00 |" in text
    assert "| without access log | 1100 | 2.0 | 1.10 | 1100 | 2.0 | 1.10 |" in text


def test_the_head_to_head_takes_each_ratio_within_its_round() -> None:
    theirs, ours = {1: 1000, 2: 500, 3: 800}, {1: 1100, 2: 600, 3: 800}
    head_to_head = [
        cell(stack, endpoint, values[r], r)
        for r in (1, 2, 3)
        for endpoint in BREAKDOWN_ENDPOINTS
        for stack, values in (("tutorial's stack", theirs), ("this project", ours))
    ]

    text = render(Report(cells=[cell("this project", e, 1000) for e in ENDPOINTS], head_to_head=head_to_head))

    assert "| `/` | 800 | 2.0 | 800 | 2.0 | 1.10, 1.20, 1.00 | 1.10 |" in text


def test_each_cached_answer_is_compared_with_a_static_file_of_its_bytes_per_second_of_the_machines_cpu() -> None:
    # (good answers/s, machine CPU busy) by round: the load held every row back, so the rates are floors.
    measured = {
        "static file `style.css`": {1: (12000, 0.24), 2: (10000, 0.25), 3: (11000, 0.20)},
        "static copy of `/`": {1: (11000, 0.22), 2: (10000, 0.20), 3: (9000, 0.20)},
        "cached `/`": {1: (11000, 0.22), 2: (12000, 0.20), 3: (9000, 0.25)},
        "static copy of `/api/forecast`": {1: (14000, 0.20), 2: (12000, 0.25), 3: (13000, 0.26)},
        "cached `/api/forecast`": {1: (14000, 0.20), 2: (12000, 0.25), 3: (13000, 0.26)},
    }
    rounds = []
    for r in (1, 2, 3):
        for name, endpoint, _ in CACHED_ROWS:
            rps, busy = measured[name][r]
            rounds.append(cell(name, endpoint, rps, r))
            rounds[-1].busy = (busy, 0.9)
    sizes = {"/static/style.css": 2857, "/": 9678, "/static/bench-page.html": 9678}

    text = render(Report(cells=[cell("this project", e, 1000) for e in ENDPOINTS], cached_rounds=rounds,
                         answer_bytes=sizes))  # fmt: skip

    # Per CPU-second: style.css 50,000, 40,000, 55,000; the copy of `/` 50,000, 50,000, 45,000; cached `/`
    # 50,000, 60,000, 36,000.
    assert (
        "| static file `style.css` | 2857 | 11000 | 24% | 50000 | static file `style.css` | 1.00, 1.00, 1.00 " in text
    )
    assert (
        "| static copy of `/` | 9678 | 10000 | 20% | 50000 | static file `style.css` | 1.00, 1.25, 0.82 | 0.92 | 1.00 |"
        in text
    )
    assert "| cached `/` | 9678 | 11000 | 22% | 50000 | static copy of `/` | 1.00, 1.20, 0.80 | 1.00 | 1.00 |" in text
    assert (
        "| cached `/api/forecast` | - | 13000 | 25% | 50000 | static copy of `/api/forecast` | 1.00, 1.00, 1.00 "
        in text
    )
