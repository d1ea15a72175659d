"""The docs stay true: every event kind and field is documented; doc examples run."""

from __future__ import annotations

import re
from pathlib import Path

import attrs

import irisflow
import irisflow.venues  # registers every venue (and the kinds their modules define)
from irisflow._events import KINDS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## `([a-z_]+)`\s*$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_kind_and_field_is_in_events_md() -> None:
    assert irisflow.Trade in KINDS.values()
    documented = sections((DOCS / "events.md").read_text())
    for kind, cls in KINDS.items():
        assert kind in documented, f"docs/events.md has no section for {kind!r}"
        for field in attrs.fields(cls)[4:]:
            assert f"`{field.name}`" in documented[kind], (kind, field.name)
