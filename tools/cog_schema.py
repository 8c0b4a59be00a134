"""Write the OpenAPI schema Cog's server validates inputs with: ``python tools/cog_schema.py [REF] [--out FILE]``.

``cog build`` (a Go tool, not on PyPI) normally writes ``.cog/openapi_schema.json`` into the image. The server
(coglet) reads that file from its working directory and compiles ``components.schemas.Input`` into its input
validator; without the file ``/openapi.json`` is a 503 and no input is checked (a width of 9999 goes through).
This tool makes the same kind of schema from the runner's signature, so the runner can be served and tested
without Docker. It uses the Cog SDK's own (private) inspector, so the types and constraints are read the way the
server reads them; choices become enum components, as cog build writes them.

REF is ``file.py:Class`` (default: the ``run:`` entry of cog.yaml in the current directory); FILE defaults to
``.cog/openapi_schema.json`` in the current directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def entry_from_cog_yaml(folder: Path) -> str:
    """The runner reference in ``folder/cog.yaml``: ``run:``, or the deprecated ``predict:``."""
    import yaml

    config = yaml.safe_load((folder / "cog.yaml").read_text(encoding="utf-8")) or {}
    ref = config.get("run") or config.get("predict")
    if not ref:
        raise SystemExit(f"{folder / 'cog.yaml'} names no runner: add run: \"predict.py:Runner\"")
    return str(ref)


def title(name: str) -> str:
    return name.replace("_", " ").title()


def _number(value: float | None) -> float | int | None:
    """The inspector keeps ge/le as floats; a whole number is written as one (64, not 64.0), as cog build does."""
    return int(value) if value is not None and float(value).is_integer() else value


def input_schema(inputs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the Input object schema, the enum schemas its choices refer to) from the inspector's input fields."""
    properties: dict[str, Any] = {}
    enums: dict[str, Any] = {}
    required = []
    for name, field in sorted(inputs.items(), key=lambda item: item[1].order):
        prop: dict[str, Any] = {"x-order": field.order}
        if field.choices is not None:
            enums[name] = {"title": name, "description": "An enumeration.", "enum": list(field.choices),
                           **field.type.primitive.json_type()}
            prop["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
        else:
            prop.update(field.type.json_type())
            prop["title"] = title(name)
        if field.default is None:
            required.append(name)
        else:
            prop["default"] = field.default
        for key, value in (("description", field.description), ("minimum", _number(field.ge)),
                           ("maximum", _number(field.le)),
                           ("minLength", field.min_length), ("maxLength", field.max_length),
                           ("pattern", field.regex), ("deprecated", field.deprecated)):
            if value is not None:
                prop[key] = value
        properties[name] = prop
    schema: dict[str, Any] = {"title": "Input", "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema, enums


def openapi_schema(ref: str) -> dict[str, Any]:
    """The OpenAPI document for the runner ``ref`` ("predict.py:Runner"), importing it from the current folder."""
    from cog import __version__
    from cog._inspector import create_predictor

    module_file, _, class_name = ref.partition(":")
    sys.path.insert(0, str(Path(module_file).resolve().parent))
    info = create_predictor(Path(module_file).stem, class_name)
    inputs, enums = input_schema(info.inputs)
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": __version__},
        "paths": {},
        "components": {"schemas": {"Input": inputs, "Output": info.output.json_type(), **enums}},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref", nargs="?", help="file.py:Class (default: cog.yaml's run: entry)")
    parser.add_argument("--out", type=Path, default=Path(".cog") / "openapi_schema.json")
    args = parser.parse_args(argv)
    schema = openapi_schema(args.ref or entry_from_cog_yaml(Path.cwd()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
