"""Shared fixtures. Fixture families live in their own ``fix_*.py`` modules."""

from __future__ import annotations

pytest_plugins: list[str] = ["fix_db", "fix_proxy"]
