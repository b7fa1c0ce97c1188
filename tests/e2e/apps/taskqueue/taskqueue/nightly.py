"""The scheduled job: a line in the state directory for each run, saying when, where and which release."""

from __future__ import annotations

import os
import socket
import time

from taskqueue.tasks import NIGHTLY_LOG

if __name__ == "__main__":
    with NIGHTLY_LOG.open("a") as log:
        when = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        log.write(f"{when} {socket.gethostname()} {os.environ['APP_VERSION']}\n")
