"""Packaging metadata that a build must not warn about."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())


def test_license_is_an_spdx_string_with_a_backend_that_reads_it() -> None:
    """PEP 639: a TOML table for ``project.license`` makes setuptools print a deprecation
    banner on every install; an SPDX string needs setuptools ≥ 77 as the build backend."""
    assert PYPROJECT["project"]["license"] == "BSD-3-Clause"
    assert not any(c.startswith("License ::") for c in PYPROJECT["project"].get("classifiers",
                                                                                []))
    floors = [re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", r)
              for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    assert len(floors) == 1 and floors[0] and int(floors[0].group(1)) >= 77
