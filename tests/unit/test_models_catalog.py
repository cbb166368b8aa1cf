"""The model catalog: one JSON Schema file per model, violations located by JSON pointer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay.intake.catalog import ModelCatalog

VALID = {"prompt": "A skyline at golden hour", "duration": 5, "mode": "pro"}


@pytest.fixture(scope="module")
def catalog() -> ModelCatalog:
    return ModelCatalog()


def locs(catalog: ModelCatalog, data: object) -> list[str]:
    return [e.loc for e in catalog.validate_input("kling-video-o1", data)]


def test_shipped_catalog_knows_kling_video_o1(catalog: ModelCatalog) -> None:
    assert catalog.names == ["kling-video-o1"]
    assert "kling-video-o1" in catalog
    assert "kling-video-o2" not in catalog


def test_valid_input_has_no_violations(catalog: ModelCatalog) -> None:
    assert locs(catalog, VALID) == []
    with_images = {**VALID, "prompt": "<<<image_1>>> to <<<image_2>>>", "image_urls": ["a", "b"]}
    assert locs(catalog, with_images) == []


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"duration": 7}, "/input/duration"),
        ({"mode": "ultra"}, "/input/mode"),
        ({"aspect_ratio": "4:3"}, "/input/aspect_ratio"),
        ({"image_urls": ["a", "b", "c"]}, "/input/image_urls"),
        ({"image_urls": ["a", 3]}, "/input/image_urls/1"),
        ({"video_list": [{"video_url": "v", "refer_type": "x"}]}, "/input/video_list/0/refer_type"),
        ({"fps": 30}, "/input/fps"),
    ],
)
def test_each_violation_is_located_at_its_field(
    catalog: ModelCatalog, change: dict[str, object], loc: str
) -> None:
    assert locs(catalog, {**VALID, **change}) == [loc]


def test_missing_required_property_is_located_at_that_property(catalog: ModelCatalog) -> None:
    assert locs(catalog, {"duration": 5}) == ["/input/prompt"]


def test_each_unexpected_property_is_its_own_violation(catalog: ModelCatalog) -> None:
    assert sorted(locs(catalog, {**VALID, "fps": 30, "seed": 1})) == ["/input/fps", "/input/seed"]


def test_every_violation_is_reported_once(catalog: ModelCatalog) -> None:
    data = {"duration": 7, "mode": "ultra", "fps": 30, "image_urls": ["a", "b", "c"]}
    assert sorted(locs(catalog, data)) == [
        "/input/duration",
        "/input/fps",
        "/input/image_urls",
        "/input/mode",
        "/input/prompt",
    ]


@pytest.mark.parametrize(
    ("prompt", "images"),
    [("<<<image_2>>>", ["a"]), ("<<<image_1>>>", None), ("<<<image_0>>>", ["a"])],
)
def test_prompt_reference_to_a_missing_image_is_located_at_the_prompt(
    catalog: ModelCatalog, prompt: str, images: list[str] | None
) -> None:
    data = {"prompt": prompt} if images is None else {"prompt": prompt, "image_urls": images}
    errors = catalog.validate_input("kling-video-o1", data)
    assert [e.loc for e in errors] == ["/input/prompt"]
    assert prompt in errors[0].message


def test_a_new_schema_file_adds_a_model_without_code(tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "required": ["text"],
        "properties": {"text": {"type": "string"}},
        "additionalProperties": False,
    }
    (tmp_path / "text-to-x.schema.json").write_text(json.dumps(schema))
    catalog = ModelCatalog(tmp_path)
    assert catalog.names == ["text-to-x"]
    assert catalog.validate_input("text-to-x", {"text": "hi"}) == []
    assert [e.loc for e in catalog.validate_input("text-to-x", {})] == ["/input/text"]


@pytest.mark.parametrize(
    ("prompt", "images", "message"),
    [
        (
            "<<<image_3>>>",
            ["a", "b"],
            "<<<image_3>>> refers to image_urls[2] (N counts from 1), but only 2 images are given",
        ),
        (
            "<<<image_2>>>",
            ["a"],
            "<<<image_2>>> refers to image_urls[1] (N counts from 1), but only 1 image is given",
        ),
        (
            "<<<image_1>>>",
            None,
            "<<<image_1>>> refers to image_urls[0] (N counts from 1), but no images are given",
        ),
        ("<<<image_0>>>", ["a"], "<<<image_0>>> refers to no image: N counts from 1"),
    ],
)
def test_image_reference_message_says_n_counts_from_1(
    catalog: ModelCatalog, prompt: str, images: list[str] | None, message: str
) -> None:
    data = {"prompt": prompt} if images is None else {"prompt": prompt, "image_urls": images}
    [error] = catalog.validate_input("kling-video-o1", data)
    assert error.message == message


def _write(folder: Path, name: str, schema: object) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.schema.json").write_text(json.dumps(schema))


def test_extra_dir_adds_models_and_may_replace_a_shipped_one(tmp_path: Path) -> None:
    _write(tmp_path, "acme-video", {"type": "object", "required": ["prompt"]})
    _write(
        tmp_path, "kling-video-o1", {"type": "object", "properties": {"fps": {"type": "integer"}}}
    )
    catalog = ModelCatalog(extra_dir=tmp_path)
    assert catalog.names == ["acme-video", "kling-video-o1"]
    assert [e.loc for e in catalog.validate_input("acme-video", {})] == ["/input/prompt"]
    # The mounted file wins: a schema change upstream needs no new image.
    assert catalog.validate_input("kling-video-o1", {"fps": 30}) == []


def test_a_broken_schema_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "acme-video.schema.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"^acme-video\.schema\.json: cannot be read as JSON"):
        ModelCatalog(extra_dir=tmp_path)
    _write(tmp_path, "acme-video", {"type": "no-such-type"})
    with pytest.raises(ValueError, match=r"^acme-video\.schema\.json: not a valid JSON Schema"):
        ModelCatalog(extra_dir=tmp_path)


def test_accepts_follows_the_unknown_models_policy() -> None:
    assert ModelCatalog().accepts("kling-video-o1")
    assert not ModelCatalog().accepts("kling-video-o9")
    forwarding = ModelCatalog(unknown_models="forward")
    assert forwarding.accepts("kling-video-o9")
    assert "kling-video-o9" not in forwarding  # still no schema to check its input with
