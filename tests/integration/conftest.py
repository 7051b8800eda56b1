"""Fixtures for tests that run the whole node."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.node import Node


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def factory(name: str = "node", **settings: Any) -> Node:
        node = Node(tmp_path / name, **settings)
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            node.stop()


@pytest.fixture
def dicom_series(manifest: list[dict[str, Any]], shared_data: Path) -> list[dict[str, Any]]:
    """The DICOM entries of the shared manifest, with absolute folders."""
    return [dict(e, folder=shared_data / e["path"]) for e in manifest if e["kind"] == "dicom"]
