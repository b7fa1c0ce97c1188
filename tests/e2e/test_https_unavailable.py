"""A first deploy whose ACME server cannot be reached: the site comes up on plain HTTP and says so."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rehearsal import nspawn
from tests.e2e.conftest import Rehearsal, bring_up

pytestmark = pytest.mark.e2e

#: Nothing listens there: the CA is down, or unreachable, as Let's Encrypt can be from a droplet.
NOWHERE = f"https://{nspawn.HOST_ADDRESS}:14999/dir"


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    yield from bring_up({"acmeServer": NOWHERE})


def test_site_serves_plain_http_and_the_url_says_so(rehearsal: Rehearsal) -> None:
    assert rehearsal.url == f"http://{rehearsal.machine.address}/"
    assert rehearsal.get("/healthz")[0] == 200

    log = (nspawn.STATE_DIR / "deploy.log").read_text()
    assert f"WARNING: no certificate for {rehearsal.machine.address} from {NOWHERE}" in log
    assert "the site stays on plain HTTP and the next deploy tries again" in log
    assert not rehearsal.host().file(rehearsal.layout.certificate_dir).exists
