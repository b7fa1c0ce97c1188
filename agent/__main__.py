"""`python3 agent.pyz ARGS...` on the server, as root (deploy.sh execs it)."""

from __future__ import annotations

import sys

from agent.cli import main
from agent.config import load
from agent.system import RealSystem


def run() -> int:
    system = RealSystem()
    try:
        return main(sys.argv[1:], system, load())
    finally:
        system.close()


if __name__ == "__main__":
    sys.exit(run())
