"""The preview comment's reading of what the CLI prints, for what the engine tests' small program cannot show."""

from __future__ import annotations

from delivery.preview import UNKNOWN, comment, read_preview, shown

#: How the program refuses a droplet's replacement without allowReplace, as the CLI prints it.
PROGRAM_REFUSAL = (
    "error: 1 problem(s) in the stack config:\n"
    "  - flask-droplet:allowReplace = false: DigitalOcean cannot change these droplets in place, only replace "
    "them: web-droplet (image ubuntu-24-04-x64 -> 170000001); web-2-droplet (region nyc3 -> ams3). Each new "
    "droplet boots from the current user-data"
)


def test_a_replacement_the_program_refuses_is_named_in_the_first_line_and_fails() -> None:
    preview = read_preview("production", "", PROGRAM_REFUSAL, 255)

    first = comment(preview, "marker").splitlines()[0]

    assert first == (
        "**`production`: replaces the droplet `web-droplet` (without `allowReplace`), the droplet `web-2-droplet` "
        "(without `allowReplace`)**, which the update refuses: this check fails."
    )
    assert not preview.passes


def test_unknowns_inside_values_and_the_providers_defaults_are_shown_as_a_reader_takes_them() -> None:
    value = {"dropletIds": [UNKNOWN], "inboundRules": [{"__defaults": [], "portRange": "22"}]}

    assert shown(value) == '{"dropletIds": ["(known after the update)"], "inboundRules": [{"portRange": "22"}]}'
