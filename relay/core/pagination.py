"""Keyset pages: the list queries fetch one row more than asked, to know if a page follows.

A list's cursor is the id of the last row of the previous page (`tsk_...`, `dlv_...`,
`sub_...`): ids are time-ordered, so "after this id" is a stable position. The cursor is
checked before it reaches a query: anything that is not an id of the listed kind is a 422
naming the parameter, on every list alike (a stray string used to give an empty page on one
list and the first page on another).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from relay.core.errors import FieldError, InvalidRequest

# What follows an id's prefix: 26 base32 characters (`relay.core.ids.new_id`) or 32 hex digits
# (`relay_new_id` in SQL, for ids minted inside a query).
_ID_BODY = re.compile(r"[0-9a-z]{26}|[0-9a-f]{32}")


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


def id_cursor(cursor: str | None, prefix: str, parameter: str = "cursor") -> str | None:
    """A list's `cursor` when it is an id of the listed kind (`prefix_...`); else a 422.

    The 422 is located at `/query/<parameter>`. An empty cursor means the first page, as an
    empty `after` does on the event feed.
    """
    if not cursor:
        return None
    body = cursor.removeprefix(f"{prefix}_")
    if body == cursor or not _ID_BODY.fullmatch(body):
        raise InvalidRequest(
            f"the {parameter} parameter is not a cursor of this list",
            [
                FieldError(
                    f"/query/{parameter}",
                    f"expected the next_cursor of an earlier page (a {prefix}_ id)",
                )
            ],
        )
    return cursor
