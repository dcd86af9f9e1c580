"""What a ``.keras`` file written by this package may hold, checked before anything reads it.

No Keras import here: the check runs before a bundle is scored (``models.dense``) as well as
before Keras loads the file, and nothing in the file is deserialised by it.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

PACKAGE = "latent_sentinel"
# What a ``.keras`` file written by ``save`` holds, and every object its config may name besides
# the model's own class: an allow-list checked before Keras reads the file, on top of Keras'
# safe mode, so a Lambda layer, a function reference or a class from any other module is
# refused without being deserialised.
MODEL_FILE_MEMBERS = frozenset({"config.json", "metadata.json", "model.weights.h5"})
ALLOWED_OBJECTS = frozenset({("keras", "DTypePolicy"), ("keras.optimizers", "Adam")})
MAX_CONFIG_BYTES = 1 << 20


class UnsafeModelError(ValueError):
    """A model file holds something this package never writes; it is not loaded."""


def _named_objects(node: Any) -> list[dict[str, Any]]:
    """Every dict in a Keras config that names a class or function to deserialise."""
    found: list[dict[str, Any]] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "class_name" in item:
                found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def check_model_file(path: Path, module: str, class_name: str) -> None:
    """Refuse ``path`` unless it is a ``.keras`` zip of ``module.class_name`` (a model class of
    this package) and allowed objects only.

    Raises ``UnsafeModelError`` naming what was found; nothing in the file is deserialised.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            members = {info.filename: info for info in zf.infolist()}
            if unexpected := sorted(set(members) - MODEL_FILE_MEMBERS):
                raise UnsafeModelError(
                    f"{path.name} has unexpected member(s): {', '.join(unexpected)}"
                )
            if "config.json" not in members or members["config.json"].file_size > MAX_CONFIG_BYTES:
                raise UnsafeModelError(f"{path.name} has no usable config.json")
            config = json.loads(zf.read("config.json"))
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsafeModelError(f"{path.name} is not a readable .keras file: {exc}") from exc
    expected = (module, class_name, f"{PACKAGE}>{class_name}")
    if (
        not isinstance(config, dict)
        or (config.get("module"), config.get("class_name"), config.get("registered_name"))
        != expected
    ):
        found = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise UnsafeModelError(f"{path.name} holds a {found!r}, expected {class_name}")
    for obj in _named_objects({k: v for k, v in config.items() if k != "class_name"}):
        key = (obj.get("module"), obj.get("class_name"))
        if key not in ALLOWED_OBJECTS or obj.get("registered_name") is not None:
            raise UnsafeModelError(
                f"{path.name} names {obj.get('module')}.{obj.get('class_name')}, which this "
                "package never saves; refusing to load it"
            )


