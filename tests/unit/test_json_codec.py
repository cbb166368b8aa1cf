"""The json/jsonb codec: a faster encoder where it can, the same values either way."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from relay.core import json_codec
from relay.core.json_codec import dumps as _dumps
from relay.core.json_codec import json_default


def _reference(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), default=json_default)


@pytest.mark.parametrize(
    "value",
    [
        {"prompt": "un café à Paris ☕", "n": 3, "ratio": 0.1, "tags": ["a", None, True]},
        {"started_at": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)},
        {"started_at": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)},
        [{"id": "dlv_1", "latency_ms": 1.234, "error": None, "retry_delay_s": 1e-05}],
        {"big": 2**70},  # beyond orjson's 64-bit integers: the json fallback
        {1: "int key"},  # json turns it into "1"; orjson refuses: the fallback
        "\ud800",  # a lone surrogate: escaped by json exactly as before (Postgres refuses it)
    ],
)
def test_encoded_text_means_the_same_json_as_the_stdlib_encoder(value: object) -> None:
    assert json.loads(_dumps(value)) == json.loads(_reference(value))


def test_text_orjson_cannot_encode_is_byte_identical_to_the_stdlib_encoder() -> None:
    for value in ({"big": 2**70}, {1: "x"}, "\ud800"):
        assert _dumps(value) == _reference(value)


def test_unknown_types_are_still_refused() -> None:
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        _dumps({"x": object()})


def test_orjson_is_used_when_installed() -> None:
    # The speed-up the dispatcher's completion write relies on (pyproject lists orjson).
    assert json_codec.orjson is not None
    assert _dumps({"a": "é"}) == '{"a":"é"}'
