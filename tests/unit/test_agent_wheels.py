"""The agent's virtualenv: the Python the app asks for, what the stack adds, and the pins built from source."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
import zipfile

import pytest

from agent import wheels
from agent.context import Agent, Failed
from agent.fake import FakeSystem
from agent.release import Bundle, install_dependencies
from agent.system import Completed
from tests.unit.agent_server import config_of

NOBLE = wheels.Target((3, 12), (2, 39), "x86_64")
VENV = "/srv/weather/venvs/abc"
DEPS = "/srv/weather/releases/.staging.1/deps"


NAMES = {"requirements": "requirements.txt", "stack": "stack-requirements.txt", "python": "python-request.txt"}
NAMES |= {"pyproject": "pyproject.toml", "lock": "uv.lock"}


def bundle(**deps: str) -> Bundle:
    """A release's bundle as the agent reads it, with these deps/ files (by their short names above)."""
    return Bundle("/b.tar.gz", "0" * 64, 0, {NAMES[name]: text.encode() for name, text in deps.items()}, ())


def agent(server: FakeSystem, **config: object) -> Agent:
    return Agent(server, dataclasses.replace(config_of("ip"), **config))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("filename", "fits"),
    [
        ("flask-3.1.3-py3-none-any.whl", True),
        ("six-1.16.0-py2.py3-none-any.whl", True),
        ("psycopg2_binary-2.9.9-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
        ("psycopg2_binary-2.9.9-cp313-cp313-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", False),
        ("multidict-6.0.4-cp311-cp311-manylinux_2_5_x86_64.manylinux1_x86_64.whl", False),
        ("cryptography-44.0.0-cp39-abi3-manylinux_2_28_x86_64.whl", True),
        ("cryptography-44.0.0-cp39-abi3-manylinux_2_40_x86_64.whl", False),
        ("numpy-2.0.0-cp312-cp312-musllinux_1_1_x86_64.whl", False),
        ("numpy-2.0.0-cp312-cp312-manylinux_2_17_aarch64.whl", False),
        ("numpy-2.0.0-cp312-cp312-win_amd64.whl", False),
        ("old-1.0-cp312-cp312-manylinux2010_x86_64.whl", True),
        ("old-1.0-cp312-cp312-linux_x86_64.whl", True),
        ("typed-1.0-py312-none-any.whl", True),
        ("typed-1.0-py313-none-any.whl", False),
        ("exact-1.0-cp312-none-any.whl", True),
        ("flask-3.1.3.tar.gz", False),
        ("short.whl", False),
    ],
)
def test_a_wheel_fits_the_servers_python_and_platform_by_its_tags(filename: str, fits: bool) -> None:
    assert wheels.wheel_fits(filename, NOBLE) is fits


def test_pins_and_the_index_come_from_the_requirements_file() -> None:
    text = (
        "-i https://mirror.example/simple/\nFlask==3.1.3\npsycopg2-binary===2.9.9 ; python_version>'3'\nrequests>=2\n"
    )

    assert wheels.requirement_pins(text) == [("flask", "3.1.3"), ("psycopg2-binary", "2.9.9")]
    assert wheels.index_url(text) == "https://mirror.example/simple"
    assert wheels.index_url("flask\n") == wheels.PYPI


def index_answer(files: dict[str, list[str]]) -> object:
    def answer(argv: list[str]) -> Completed:
        name = argv[-1].rstrip("/").rsplit("/", 1)[-1]
        if name not in files:
            return Completed(22, "", "404")
        return Completed(0, json.dumps({"files": [{"filename": f} for f in files[name]]}))

    return answer


def test_pins_without_a_wheel_for_the_servers_python_are_named_with_what_building_needs() -> None:
    server = FakeSystem()
    server.answer_with(
        ["curl"],
        index_answer(  # type: ignore[arg-type]
            {
                "flask": ["flask-3.1.3-py3-none-any.whl", "flask-3.1.3.tar.gz"],
                "psycopg2-binary": [
                    "psycopg2-binary-2.9.9.tar.gz",
                    "psycopg2_binary-2.9.9-cp313-cp313-manylinux_2_17_x86_64.whl",
                    "psycopg2_binary-2.9.10-cp312-cp312-manylinux_2_17_x86_64.whl",
                ],
            }
        ),
    )
    deps = {"requirements.txt": b"flask==3.1.3\npsycopg2-binary==2.9.9\nmissing==1.0\n"}

    missing = wheels.report(agent(server), deps, NOBLE, system_python=True)

    assert missing == [("psycopg2-binary", "2.9.9")]
    log = "\n".join(server.stderr)
    assert "psycopg2-binary 2.9.9 has no wheel for CPython 3.12 on Linux x86_64 (glibc 2.39)" in log
    assert "(apt: build-essential python3-dev libpq-dev)" in log
    assert "could not list the files of missing" in log
    assert "no buildPackages are set" in log


def test_a_locked_package_without_a_fitting_wheel_is_named_from_the_lock_alone() -> None:
    lock = """version = 1
[[package]]
name = "site"
version = "1"
source = { virtual = "." }

[[package]]
name = "Multidict"
version = "6.0.4"
source = { registry = "https://pypi.org/simple" }
sdist = { url = "https://files/multidict-6.0.4.tar.gz" }
wheels = [{ url = "https://files/multidict-6.0.4-cp311-cp311-manylinux_2_17_x86_64.whl" }]

[[package]]
name = "flask"
version = "3.1.3"
source = { registry = "https://pypi.org/simple" }
wheels = [{ url = "https://files/flask-3.1.3-py3-none-any.whl" }]
"""
    server = FakeSystem()

    missing = wheels.report(
        agent(server, build_packages=("build-essential",)), {"uv.lock": lock.encode()}, NOBLE, False
    )

    assert missing == [("multidict", "6.0.4")]
    assert not server.ran("curl")
    assert "(apt: build-essential)" in "\n".join(server.stderr)
    assert "no buildPackages are set" not in "\n".join(server.stderr)


def test_a_python_the_system_lacks_is_made_by_uv_with_the_apps_gunicorn() -> None:
    server = FakeSystem()
    config = config_of("ip")
    server.files[config.layout.uv] = ""
    server.answer(f"{VENV}/bin/python", stdout="3 13 2.41 x86_64\n")
    release = bundle(
        requirements="flask\ngunicorn==21.2.0\n",
        stack="gunicorn>=21.0.0\n",
        python="3.13\n",
    )

    install_dependencies(agent(server), "r1", VENV, DEPS, release)

    (made,) = server.ran(config.layout.uv, "venv")
    assert made == [config.layout.uv, "venv", "--quiet", "--python", "3.13", "--seed", VENV]
    (pip,) = server.ran(f"{VENV}/bin/pip")
    assert pip[-3:] == ["-r", f"{DEPS}/requirements.txt", "gunicorn>=21.0.0"]
    assert not server.ran("python3", "-m", "venv")
    log = "\n".join(server.stderr)
    assert "the app asks for Python 3.13" in log
    assert "the app's Python: CPython 3.13 on Linux x86_64 (glibc 2.41)" in log


def test_locked_dependencies_on_the_system_python_get_the_stacks_gunicorn_after_the_lock() -> None:
    server = FakeSystem()
    config = config_of("ip")
    server.files[config.layout.uv] = ""
    release = bundle(pyproject="[project]\n", lock="version = 1\n", stack="gunicorn==23.0.0\n")

    install_dependencies(agent(server), "r1", VENV, DEPS, release)

    assert server.ran(config.layout.uv, "venv") == [
        [config.layout.uv, "venv", "--quiet", "--python", "/usr/bin/python3", VENV]
    ]
    (sync,) = server.ran(config.layout.uv, "sync")
    assert sync[sync.index("--python") + 1] == f"{VENV}/bin/python"
    assert server.ran(config.layout.uv, "pip", "install")[0][-1] == "gunicorn==23.0.0"


def test_a_lock_that_has_gunicorn_gets_nothing_added() -> None:
    server = FakeSystem()
    config = config_of("ip")
    server.files[config.layout.uv] = ""
    release = bundle(pyproject="[project]\n", lock="version = 1\n", stack="")

    install_dependencies(agent(server), "r1", VENV, DEPS, release)

    assert server.ran(config.layout.uv, "sync")
    assert not server.ran(config.layout.uv, "pip", "install")


def test_a_bundle_without_stack_requirements_gets_the_stacks_gunicorn() -> None:
    server = FakeSystem()

    install_dependencies(agent(server), "r1", VENV, DEPS, bundle(requirements="flask\n"))

    assert server.ran("python3", "-m", "venv") == [["python3", "-m", "venv", VENV]]
    assert server.ran(f"{VENV}/bin/pip")[0][-1] == f"gunicorn=={config_of('ip').gunicorn_version}"


def test_build_packages_are_installed_before_the_dependencies() -> None:
    server = FakeSystem()

    install_dependencies(
        agent(server, build_packages=("build-essential", "libpq-dev")), "r1", VENV, DEPS, bundle(requirements="x\n")
    )

    apt = server.commands.index(
        ["apt-get", "install", "--yes", "--quiet", "--no-install-recommends", "build-essential", "libpq-dev"]
    )
    assert apt < server.commands.index(next(iter(server.ran(f"{VENV}/bin/pip"))))


def test_build_packages_that_do_not_install_stop_the_deploy() -> None:
    server = FakeSystem()
    server.answer("apt-get", "install", returncode=100)

    with pytest.raises(Failed, match="buildPackages did not install"):
        install_dependencies(agent(server, build_packages=("nope",)), "r1", VENV, DEPS, bundle(requirements="x\n"))

    assert not server.ran(f"{VENV}/bin/pip")


def test_uv_that_does_not_install_stops_the_deploy() -> None:
    server = FakeSystem()
    server.answer("python3", "-m", "venv", returncode=1)

    with pytest.raises(Failed, match=r"uv 0\.13\.8 did not install"):
        install_dependencies(agent(server), "r1", VENV, DEPS, bundle(requirements="x\n", python="3.13"))


def sdist(name: str, files: dict[str, str]) -> bytes:
    """A source archive (.tar.gz) of `files`, under NAME/ as sdists are."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for path, text in files.items():
            data = text.encode()
            member = tarfile.TarInfo(f"{name}/{path}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return out.getvalue()


SDISTS = {
    "flask-mail": sdist("Flask-Mail-0.9.1", {"setup.py": "setup(py_modules=['flask_mail'])", "flask_mail.py": ""}),
    "langdetect": sdist("langdetect-1.0.9", {"setup.py": "setup(packages=['langdetect'])", "langdetect/x.py": ""}),
    "fastcore": sdist("fastcore-1.0", {"setup.py": "from setuptools import Extension", "src/speedup.c": ""}),
    "ruster": sdist("ruster-1.0", {"pyproject.toml": "[build-system]\nbuild-backend = 'maturin'", "Cargo.toml": ""}),
    "cythonic": sdist("cythonic-1.0", {"pyproject.toml": "", "cythonic/_fast.pyx": ""}),
}


def test_pins_built_from_source_are_named_by_what_their_source_needs() -> None:
    server = FakeSystem()
    listing = {name: [f"{name}-1.0.tar.gz"] for name in SDISTS}

    def answer(argv: list[str]) -> Completed:
        if "-o" in argv:
            name = argv[-1].rsplit("/", 1)[-1].removesuffix("-1.0.tar.gz")
            server.files[argv[argv.index("-o") + 1]] = SDISTS[name]
            return Completed(0)
        name = argv[-1].rstrip("/").rsplit("/", 1)[-1]
        files = [{"filename": f, "url": f"https://files.example/{f}"} for f in listing[name]]
        return Completed(0, json.dumps({"files": files}))

    server.answer_with(["curl"], answer)
    server.answer("mktemp", stdout="/tmp/flaskdroplet-sdist.000001\n")
    deps = {"requirements.txt": "".join(f"{name}==1.0\n" for name in SDISTS).encode()}

    missing = wheels.report(agent(server), deps, NOBLE, system_python=True)

    assert [name for name, _ in missing] == list(SDISTS)
    log = "\n".join(server.stderr)
    for name in ("flask-mail", "langdetect"):
        assert f"{name} 1.0 has no wheel for {NOBLE}: it is built from its source, which is pure Python: " in log
    assert "fastcore 1.0 has no wheel" in log
    assert "which has extension code in C: building it needs a compiler" in log
    assert (
        "extension code in Rust: building it needs a compiler, Python's headers and those of the libraries it "
        "links (apt: build-essential cargo python3-dev)" in log
    )
    assert "extension code in Cython" in log
    assert "C compiler" not in log.split("langdetect 1.0")[1].split("\n")[0]
    assert not server.exists("/tmp/flaskdroplet-sdist.000001")
    assert "no buildPackages are set" in log


def test_only_pure_python_pins_built_from_source_ask_for_no_build_packages() -> None:
    server = FakeSystem()
    archive = SDISTS["langdetect"]

    def answer(argv: list[str]) -> Completed:
        if "-o" in argv:
            server.files[argv[argv.index("-o") + 1]] = archive
            return Completed(0)
        files = [{"filename": "langdetect-1.0.9.tar.gz", "url": "https://files.example/langdetect-1.0.9.tar.gz"}]
        return Completed(0, json.dumps({"files": files}))

    server.answer_with(["curl"], answer)
    server.answer("mktemp", stdout="/tmp/flaskdroplet-sdist.000001\n")

    wheels.report(agent(server), {"requirements.txt": b"langdetect==1.0.9\n"}, NOBLE, system_python=True)

    log = "\n".join(server.stderr)
    assert "langdetect 1.0.9 has no wheel" in log
    assert "pure Python: building it needs nothing more" in log
    assert "buildPackages" not in log
    assert "compiler" not in log


def test_an_unreadable_source_is_said_to_be_unknown() -> None:
    assert wheels.extension_languages(b"not an archive") is None
    assert wheels.extension_languages(SDISTS["flask-mail"]) == set()
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("pkg-1.0/setup.py", "ext_modules=[Extension('pkg._x', ['pkg/_x.c'])]")
    assert wheels.extension_languages(zipped.getvalue()) == {"C"}
