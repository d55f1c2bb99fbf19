"""Fuzz image reference parsing: a reference or a ReferenceError; a parsed reference parses back to itself."""

import atheris
from harness import run

with atheris.instrument_imports(include=["distill"]):
    from distill.reference import ReferenceError, parse_reference


def test_one_input(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(300)
    try:
        reference = parse_reference(text)
    except ReferenceError as exc:
        assert "\n" not in str(exc)
        return
    assert parse_reference(str(reference)) == reference


if __name__ == "__main__":
    run(test_one_input)
