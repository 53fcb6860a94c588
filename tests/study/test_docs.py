"""The generated references in docs/ match the code (regenerate with `python -m study.docgen`)."""

from __future__ import annotations

import pytest

from study import docgen


@pytest.mark.parametrize("path", list(docgen.render()), ids=lambda p: p.name)
def test_generated_reference_is_up_to_date(path, monkeypatch):
    # guards drift: a changed field, default, comment or CLI option must be regenerated into docs/
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps help to the terminal width
    expected = docgen.render()[path]
    assert path.exists(), f"{path} missing: run python -m study.docgen"
    assert path.read_text() == expected, f"{path.name} is stale: run python -m study.docgen"


def test_every_stage_config_field_is_documented():
    # guards the house rule "every field carries a one-line comment": an empty meaning cell fails here
    text = docgen.spec_reference()
    section = text.split("## fixed:")[1]
    empty = [line for line in section.splitlines() if line.startswith("| `") and line.rstrip().endswith("|  |")]
    assert not empty, f"undocumented config fields: {empty}"
