"""What every phase is given: the server (a `System`), the stack's `Config`, and how to speak and fail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from agent.config import Config
from agent.system import System


class Failed(Exception):
    """The deploy (or an admin verb) stops here; the message says why and what still serves."""

    def __init__(self, message: str, rolled_back: bool = False) -> None:
        super().__init__(message)
        self.rolled_back = rolled_back
        """The release went live, failed there, and the one before it serves again."""


@dataclass(frozen=True)
class Agent:
    system: System
    config: Config

    def log(self, message: str) -> None:
        self.system.log(f"{self.system.clock()} deploy[{self.config.app_name}]: {message}")

    def fail(self, message: str, rolled_back: bool = False) -> NoReturn:
        raise Failed(message, rolled_back)

    def report_failure(self, failure: Failed) -> None:
        self.log(f"FAILED: {failure}")
        self.log(f"logs: journalctl -u {self.config.layout.service_unit} -n 50; /var/log/nginx/error.log")

    def systemctl(self, *words: str) -> bool:
        """`systemctl WORDS...`, its output in the log; whether it succeeded."""
        return self.system.run(["systemctl", *words], output="stderr").ok

    def live_release(self) -> str:
        """The live release's directory, or "" before the first."""
        return self.system.readlink(self.config.layout.current) or ""
