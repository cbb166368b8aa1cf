"""Model schema files: a folder of `<model>.schema.json`, read and checked to be JSON Schemas.

Below the model catalog (relay.intake.catalog) so that Settings can check
RELAY_MODEL_SCHEMAS_DIR at start-up without importing the intake layer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

SCHEMA_SUFFIX = ".schema.json"
UnknownModels = Literal["reject", "forward"]


def load_schema_dir(schema_dir: Path) -> dict[str, dict[str, Any]]:
    """Every `<model>.schema.json` of a folder, checked to be a JSON Schema, by model name.

    Raises ValueError naming the file at fault, so a bad mounted schema stops start-up
    with the file's name rather than failing the first task of that model.
    """
    schemas: dict[str, dict[str, Any]] = {}
    for path in sorted(schema_dir.glob("*" + SCHEMA_SUFFIX)):
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
            Draft202012Validator.check_schema(schema)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path.name}: cannot be read as JSON: {exc}") from None
        except SchemaError as exc:
            raise ValueError(f"{path.name}: not a valid JSON Schema: {exc.message}") from None
        if not isinstance(schema, dict):
            raise ValueError(f"{path.name}: must hold a JSON Schema object")
        schemas[path.name.removesuffix(SCHEMA_SUFFIX)] = schema
    return schemas
