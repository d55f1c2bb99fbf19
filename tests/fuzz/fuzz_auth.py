"""Fuzz the WWW-Authenticate parser: challenges or a ValueError."""

import atheris
from harness import run

with atheris.instrument_imports(include=["distill"]):
    from distill.registry.auth import parse_www_authenticate


def test_one_input(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(2000)
    try:
        parse_www_authenticate(text)
    except ValueError as exc:
        assert "\n" not in str(exc)


if __name__ == "__main__":
    run(test_one_input)
