"""The models the relay accepts: one JSON Schema file per model, no code per model."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from relay.core.errors import FieldError, json_pointer
from relay.core.schema_files import UnknownModels, load_schema_dir

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
_IMAGE_REF = re.compile(r"<<<image_(\d+)>>>")


def _field_errors(error: ValidationError, base: str) -> list[FieldError]:
    """One located violation per error; a missing or unexpected property is located at itself.

    jsonschema reports both at the enclosing object (and every unexpected property in one
    error), which would leave a client to parse the message to find the field at fault.
    """
    path = list(error.absolute_path)
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        # jsonschema yields one error per missing name, worded `'prompt' is a required property`.
        # (Its stubs allow an unset validator_value/schema, for errors made by hand.)
        missing = [p for p in error.validator_value if p not in instance]  # type: ignore[union-attr]
        name = next((p for p in missing if error.message.startswith(repr(p))), None)
        if name is not None:
            return [FieldError(base + json_pointer([*path, name]), "is a required property")]
    if (
        error.validator == "additionalProperties"
        and error.validator_value is False
        and isinstance(instance, dict)
    ):
        known = error.schema.get("properties", {})  # type: ignore[union-attr]
        patterns = [re.compile(p) for p in error.schema.get("patternProperties", {})]  # type: ignore[union-attr]
        unexpected = [
            name
            for name in instance
            if name not in known and not any(p.search(name) for p in patterns)
        ]
        if unexpected:
            return [
                FieldError(base + json_pointer([*path, name]), "is not an allowed property")
                for name in unexpected
            ]
    return [FieldError(base + json_pointer(path), error.message)]


class ModelCatalog:
    """Validators for every `<model>.schema.json` shipped, plus those of an extra folder.

    The extra folder (RELAY_MODEL_SCHEMAS_DIR, a mounted ConfigMap) adds models without a
    new image; a file there named like a shipped one replaces it, so a deployment can
    follow an upstream schema change at once. `unknown_models="forward"` accepts models
    with no schema at all (their input unchecked; upstream's own 4xx then fails the task).
    """

    def __init__(
        self,
        schema_dir: Path = SCHEMA_DIR,
        *,
        extra_dir: Path | None = None,
        unknown_models: UnknownModels = "reject",
    ) -> None:
        schemas = load_schema_dir(schema_dir)
        if extra_dir is not None:
            schemas.update(load_schema_dir(extra_dir))
        self._validators = {name: Draft202012Validator(s) for name, s in schemas.items()}
        self.unknown_models: UnknownModels = unknown_models

    def accepts(self, model: object) -> bool:
        """A task (or a subscription filter) may name this model."""
        return model in self or (self.unknown_models == "forward" and isinstance(model, str))

    @property
    def names(self) -> list[str]:
        """Known model slugs, sorted."""
        return sorted(self._validators)

    def __contains__(self, model: object) -> bool:
        return model in self._validators

    def schema(self, model: str) -> dict[str, Any]:
        """The JSON Schema of a model's input."""
        return cast(dict[str, Any], self._validators[model].schema)  # built from a dict

    def validate_input(self, model: str, data: Any, base: str = "/input") -> list[FieldError]:
        """Every violation of the model's schema, plus prompt references to missing images."""
        validator = self._validators[model]
        errors: list[FieldError] = []
        for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
            # A oneOf/anyOf failure explains itself best through its closest sub-error.
            chosen = best_match([error]) if error.context else error
            errors.extend(_field_errors(chosen, base))
        if isinstance(data, dict) and isinstance(data.get("prompt"), str):
            images = data.get("image_urls")
            count = len(images) if isinstance(images, list) else 0
            for match in _IMAGE_REF.finditer(data["prompt"]):
                n = int(match.group(1))
                if not 1 <= n <= count:
                    errors.append(
                        FieldError(f"{base}/prompt", _image_ref_message(match[0], n, count))
                    )
        return errors


def _image_ref_message(ref: str, n: int, count: int) -> str:
    """Why `<<<image_N>>>` names no image, saying that N counts from 1 (a common slip)."""
    if n < 1:
        return f"{ref} refers to no image: N counts from 1"
    given = {0: "no images are given", 1: "only 1 image is given"}.get(
        count, f"only {count} images are given"
    )
    return f"{ref} refers to image_urls[{n - 1}] (N counts from 1), but {given}"
