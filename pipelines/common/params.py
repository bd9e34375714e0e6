"""params.yaml loaded into pydantic models, so a typo or a wrong type fails at once with its path.

Each top-level section belongs to one model and is validated by that model's own params class, found by
convention (`pipelines/<section>/params.py` exports `PARAMS`) when the section is read: a stage loads
and imports only its own model's params, never the others' (no union of every model to keep in step).
An unknown section fails at load.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel


@cache
def section_class(section: str) -> type[BaseModel]:
    return importlib.import_module(f"pipelines.{section}.params").PARAMS


def known_sections() -> list[str]:
    root = Path(__file__).resolve().parent.parent
    return sorted(p.parent.name for p in root.glob("*/params.py") if p.parent.name != "common")


class ParamsFile:
    """The sections of params.yaml, each validated by its model's class when first read (`p.game_ltv`)."""

    def __init__(self, data: dict[str, Any], path: Path) -> None:
        self._data, self._path, self._cache = data, path, {}
        unknown = sorted(set(data) - set(known_sections()))
        if unknown:
            raise ValueError(
                f"{path}: unknown section(s) {unknown}; a section is a model with pipelines/<model>/params.py "
                f"({known_sections()})"
            )

    def __getattr__(self, section: str) -> Any:
        if section.startswith("_"):
            raise AttributeError(section)
        if section not in self._cache:
            if section not in self._data:
                raise AttributeError(f"{self._path} has no section {section!r}")
            self._cache[section] = section_class(section).model_validate(self._data[section])
        return self._cache[section]

    def sections(self) -> list[str]:
        return list(self._data)


def load_params(path: Path | str = "params.yaml") -> ParamsFile:
    with open(path) as f:
        return ParamsFile(yaml.safe_load(f) or {}, Path(path))
