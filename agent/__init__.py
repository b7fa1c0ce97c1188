"""The server agent: stdlib Python that applies each deploy on the server, shipped with it.

It runs with the server's own /usr/bin/python3 (Ubuntu 24.04: 3.12), no virtualenv. Its
phases are modules: `checks` and `certificate`, `volume`, `release`, `publish`, `finish`
and the `admin` verbs; every effect goes through `system.System`.
"""
