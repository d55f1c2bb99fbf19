"""Fuzz the profile parser and validator: any text gives settings or a list of one-line issues."""

import atheris
from harness import run

with atheris.instrument_imports(include=["distill"]):
    from distill.schema import validate_document
    from distill.yamlsafe import parse_yaml


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    document, error = parse_yaml(text, "fuzz.yaml")
    if error:
        assert "\n" not in error
        return
    _, _, issues = validate_document(document, "fuzz.yaml")
    assert all("\n" not in issue for issue in issues)


if __name__ == "__main__":
    run(test_one_input)
