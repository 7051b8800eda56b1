"""The evaluation that ships beside a model, read the same way by every test that relies on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def shipped_evaluation(model: Path) -> dict[str, Any]:
    """``models/<name>.metrics.json`` beside ``models/<name>.onnx``, written by ``python -m training.evaluate``."""
    path = model.with_name(model.stem + ".metrics.json")
    assert path.is_file(), f"the model ships without its evaluation: {path}"
    data: dict[str, Any] = json.loads(path.read_text())
    return data
