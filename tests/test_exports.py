"""The public namespace: ``irisflow.__all__`` is sorted, complete and importable."""

from __future__ import annotations

import types

import irisflow
import irisflow.testing


def isort_key(name: str) -> tuple[int, str]:
    # Constants, then classes, then functions: the order ruff's RUF022 keeps.
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted() -> None:
    assert list(irisflow.__all__) == sorted(irisflow.__all__, key=isort_key)
    assert list(irisflow.testing.__all__) == sorted(irisflow.testing.__all__, key=isort_key)


def test_all_is_complete_and_exists() -> None:
    public = {
        name
        for name, value in vars(irisflow).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert public == set(irisflow.__all__)
    for name in irisflow.__all__:
        assert hasattr(irisflow, name), name


def test_exported_objects_come_from_private_modules() -> None:
    for name in irisflow.__all__:
        value = getattr(irisflow, name)
        if isinstance(value, type | types.FunctionType):
            assert value.__module__.startswith("irisflow._"), (name, value.__module__)
