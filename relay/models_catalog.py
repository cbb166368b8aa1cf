"""The models the relay accepts: one JSON Schema file per model, no code per model."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from relay.errors import FieldError

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
_IMAGE_REF = re.compile(r"<<<image_(\d+)>>>")


def _pointer(parts: list[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


class ModelCatalog:
    """Validators for every `<model>.schema.json` in a folder."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR) -> None:
        self._validators: dict[str, Draft202012Validator] = {}
        for path in sorted(schema_dir.glob("*.schema.json")):
            schema = json.loads(path.read_text())
            Draft202012Validator.check_schema(schema)
            self._validators[path.name.removesuffix(".schema.json")] = Draft202012Validator(schema)

    @property
    def names(self) -> list[str]:
        """Known model slugs, sorted."""
        return sorted(self._validators)

    def __contains__(self, model: object) -> bool:
        return model in self._validators

    def schema(self, model: str) -> dict[str, Any]:
        """The JSON Schema of a model's input."""
        return self._validators[model].schema

    def validate_input(self, model: str, data: Any, base: str = "/input") -> list[FieldError]:
        """Every violation of the model's schema, plus prompt references to missing images."""
        validator = self._validators[model]
        errors = []
        for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
            # A oneOf/anyOf failure explains itself best through its closest sub-error.
            chosen = best_match([error]) if error.context else error
            errors.append(FieldError(base + _pointer(list(chosen.absolute_path)), chosen.message))
        if isinstance(data, dict) and isinstance(data.get("prompt"), str):
            images = data.get("image_urls")
            count = len(images) if isinstance(images, list) else 0
            for match in _IMAGE_REF.finditer(data["prompt"]):
                n = int(match.group(1))
                if not 1 <= n <= count:
                    errors.append(
                        FieldError(
                            f"{base}/prompt",
                            f"{match.group(0)} refers to image_urls entry {n}, "
                            f"but {count} image URL(s) were given",
                        )
                    )
        return errors
