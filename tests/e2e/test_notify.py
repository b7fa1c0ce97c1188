"""Notifications from the booted rehearsal to a webhook receiver on a host of its own.

The receiver runs in a network namespace this module makes, at an address of the
rehearsal's network that the machine reaches through the host, as a droplet reaches
a webhook on the internet. Each event is made to happen for real on the machine, and
the receiver gets one message for each of its three webhooks, in that webhook's form.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rehearsal import nspawn, run
from tests.e2e.conftest import Rehearsal, bring_up, host_namespace

pytestmark = pytest.mark.e2e

NETNS = "fdnotify"
HOST_VETH = "ve-fd-notify"
HOST_ADDRESS = "10.213.9.1"
RECEIVER_ADDRESS = "10.213.9.2"
PORT = 8099
BASE = f"http://{RECEIVER_ADDRESS}:{PORT}"
WEBHOOKS = [f"slack+{BASE}/slack/t0ken", f"discord+{BASE}/discord/t0ken", f"{BASE}/plain/t0ken"]
CONFIG: dict[str, Any] = {"notifyWebhooks": WEBHOOKS, "notifyOnLive": True}
WAIT_SECONDS = 60

#: Each POST as a JSON line: its path, content type and body. Bounded: it serves until the test stops it.
RECEIVER = """
import http.server, json, sys
out = open(sys.argv[1], "a", buffering=1)
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        kind = self.headers.get("Content-Type")
        out.write(json.dumps({"path": self.path, "type": kind, "body": body.decode()}) + "\\n")
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((sys.argv[2], int(sys.argv[3])), Receiver).serve_forever()
"""


class Receiver:
    def __init__(self, log: Path, netns: str = NETNS, address: str = RECEIVER_ADDRESS, port: int = PORT) -> None:
        self.log = log
        self.where = (netns, address, port)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        netns, address, port = self.where
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", RECEIVER, str(self.log), address, str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def messages(self) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [json.loads(line) for line in lines]

    def wait_for(self, wanted: Callable[[dict[str, Any]], bool], count: int = 3) -> list[dict[str, Any]]:
        """The messages (`count` of them, one for each webhook) that `wanted` picks, once they have all come."""
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            found = [message for message in self.messages() if wanted(message)]
            if len(found) >= count:
                time.sleep(1)  # a message more than expected would arrive at once
                return [message for message in self.messages() if wanted(message)]
            time.sleep(0.5)
        pytest.fail(f"the receiver did not get {count} messages within {WAIT_SECONDS} s: {self.messages()}")


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    with host_namespace(NETNS, HOST_VETH, HOST_ADDRESS, RECEIVER_ADDRESS):
        found = Receiver(tmp_path_factory.mktemp("receiver") / "received.jsonl")
        found.start()
        yield found
        found.stop()


@pytest.fixture(scope="module")
def rehearsal(receiver: Receiver) -> Iterator[Rehearsal]:
    yield from bring_up(CONFIG)


def of_event(event: str, unit: str = "") -> Callable[[dict[str, Any]], bool]:
    """The messages of one event (by the plain body's field, or the others' text), for one unit or any."""
    words = {
        "deploy-live": " is live",
        "deploy-refused": " was refused; ",
        "backup-failed": "the backup of /var/lib/weather failed",
        "certificate-not-renewed": "the certificate could not be renewed",
        "unit-failed": f"{unit} failed",
    }[event]

    def wanted(message: dict[str, Any]) -> bool:
        body = json.loads(message["body"])
        if message["path"].startswith("/plain/"):
            return bool(body["event"] == event and (not unit or body["unit"] == unit))
        return words in body.get("text", body.get("content", ""))

    return wanted


def by_form(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    forms = {message["path"].split("/")[1]: json.loads(message["body"]) for message in messages}
    assert len(forms) == len(messages) == 3, messages
    assert {message["type"] for message in messages} == {"application/json"}
    return forms


def sudo(rehearsal: Rehearsal, command: str) -> Any:
    return rehearsal.host().run(f"sudo sh -c {json.dumps(command)}")


def test_a_release_that_went_live_is_told_to_each_webhook_in_its_form(rehearsal: Rehearsal, receiver: Receiver) -> None:
    sent = by_form(receiver.wait_for(of_event("deploy-live")))

    site = rehearsal.machine.address
    summary = f"release {rehearsal.release_id} is live"
    assert sent["slack"] == {"text": f"*weather* on {site}: {summary}\n{rehearsal.url}"}
    assert sent["discord"] == {
        "content": f"**weather** on {site}: {summary}\n{rehearsal.url}",
        "username": "flask-droplet",
        "allowed_mentions": {"parse": []},
    }
    assert sent["plain"] == {
        "source": "flask-droplet",
        "app": "weather",
        "site": site,
        "event": "deploy-live",
        "summary": summary,
        "detail": rehearsal.url,
        "release": rehearsal.release_id,
        "unit": "",
    }


def test_the_addresses_are_root_s_alone_and_in_no_log(rehearsal: Rehearsal) -> None:
    host = rehearsal.host()
    notify_file = host.file("/etc/weather/notify.json")

    assert (notify_file.user, notify_file.group, notify_file.mode) == ("root", "root", 0o600)
    assert "t0ken" in notify_file.content_string
    assert "t0ken" not in host.file(rehearsal.layout.env_file).content_string
    assert "t0ken" not in sudo(rehearsal, "journalctl --no-pager -o cat").stdout
    assert "t0ken" not in sudo(rehearsal, "cat /var/lib/cloud/instance/user-data.txt").stdout
    assert "t0ken" not in sudo(rehearsal, "cat /home/deploy/flaskdroplet/*.sh; ls /home/deploy/flaskdroplet").stdout


def test_a_refused_deploy_is_told_with_the_check_that_failed(rehearsal: Rehearsal, receiver: Receiver) -> None:
    layout = rehearsal.layout
    refused = sudo(rehearsal, f"/bin/bash {layout.deploy_script} 000000000000 /nowhere.tar.gz </dev/null")

    assert refused.rc == 1
    sent = by_form(receiver.wait_for(of_event("deploy-refused")))
    assert sent["plain"]["detail"] == "bundle /nowhere.tar.gz does not exist"
    assert sent["plain"]["summary"] == f"release 000000000000 was refused; release {rehearsal.release_id} serves"
    assert "bundle /nowhere.tar.gz does not exist" in sent["slack"]["text"]


def test_a_failed_backup_is_told(rehearsal: Rehearsal, receiver: Receiver) -> None:
    incoming = rehearsal.layout.backup_incoming
    # Its sandbox cannot be set up without the directory it writes: the backup fails before it starts.
    failed = sudo(rehearsal, f"rm -rf {incoming} && systemctl start weather-backup.service")
    try:
        assert failed.rc != 0
        sent = by_form(receiver.wait_for(of_event("backup-failed")))
        assert sent["plain"]["unit"] == "weather-backup.service"
        assert sent["plain"]["detail"].startswith("result: ")
    finally:
        sudo(rehearsal, f"install -d -m 0700 -o weather -g weather {incoming}; systemctl reset-failed")


def test_a_renewal_that_failed_is_told(rehearsal: Rehearsal, receiver: Receiver) -> None:
    # certbot renew failing (an ACME server that refuses, say) stands here as a renewal that exits 1.
    drop_in = "/run/systemd/system/flaskdroplet-certbot-renew.service.d"
    failed = sudo(
        rehearsal,
        f"mkdir -p {drop_in} && printf '[Service]\\nExecStart=\\nExecStart=/bin/false\\n' > {drop_in}/fail.conf"
        " && systemctl daemon-reload && systemctl start flaskdroplet-certbot-renew.service",
    )
    try:
        assert failed.rc != 0
        sent = by_form(receiver.wait_for(of_event("certificate-not-renewed")))
        assert sent["plain"]["detail"].startswith("result: exit-code; journalctl -u flaskdroplet-certbot-renew.service")
    finally:
        sudo(rehearsal, f"rm -rf {drop_in}; systemctl daemon-reload; systemctl reset-failed")


def test_the_app_failing_for_good_is_told_once(rehearsal: Rehearsal, receiver: Receiver) -> None:
    drop_in = "/run/systemd/system/weather.service.d"
    sudo(
        rehearsal,
        f"mkdir -p {drop_in} && printf '[Service]\\nExecStartPre=/bin/false\\n' > {drop_in}/fail.conf"
        " && systemctl daemon-reload && systemctl restart --no-block weather.service",
    )
    try:
        # Restart=on-failure tries again each second; systemd's start limit (5 in 10 s) then fails it for good.
        sent = by_form(receiver.wait_for(of_event("unit-failed", "weather.service")))
        assert sent["plain"]["summary"] == "weather.service failed"
    finally:
        sudo(
            rehearsal,
            f"rm -rf {drop_in}; systemctl daemon-reload; systemctl reset-failed; "
            "systemctl start weather.socket weather.service",
        )
    deadline = time.monotonic() + 60
    while rehearsal.get("/healthz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(1)
    assert rehearsal.get("/healthz")[0] == 200


def test_with_the_receiver_down_the_deploy_and_the_backup_succeed(rehearsal: Rehearsal, receiver: Receiver) -> None:
    receiver.stop()
    before = len(receiver.messages())

    release_id, ran = run.redeploy("dev", {**CONFIG, "appEnv": {"NOTIFY_TEST": "receiver down"}})
    backup = sudo(rehearsal, f"/bin/bash {rehearsal.layout.deploy_script} backup")

    assert "deploy" in ran
    assert ran["deploy"].splitlines()[0] == release_id
    deploy_log = (nspawn.FIRST.directory / "deploy.log").read_text()
    assert "notify: webhook 1 of 3 (slack) is unreachable (Connection refused); not told deploy-live" in deploy_log
    assert "t0ken" not in deploy_log
    assert backup.rc == 0, backup.stderr
    assert backup.stdout.strip()
    assert len(receiver.messages()) == before
