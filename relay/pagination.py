"""Keyset pages: the list queries fetch one row more than asked, to know if a page follows."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any


def keyset_page(
    rows: Sequence[Mapping[str, Any]],
    limit: int,
    cursor: Callable[[Mapping[str, Any]], str] = lambda row: row["id"],
) -> tuple[list[dict[str, Any]], str | None]:
    """The first `limit` of `limit + 1` fetched rows, and the next page's cursor (or None).

    The cursor is taken from the page's last row; None when no row was left over.
    """
    page = [dict(row) for row in rows[:limit]]
    return page, (cursor(page[-1]) if len(rows) > limit else None)
