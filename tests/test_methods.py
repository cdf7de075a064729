"""The methods' registry (``ddrp_dask.maths.methods``): a new module is a new method, and
every registered method keeps the protocol's promises (its K range, its fit at every valid
K, the build's prediction equal to its predictor's)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import ddrp_dask as dd
from ddrp_dask.maths.methods import NAMES, Method, Statistics, discover, get
from ddrp_dask.options import METHODS, check_k

from .conftest import make_pair

NEW_METHOD = '''
from ddrp_dask.maths.methods.oblivious import Gaussian


class Doubled(Gaussian):
    name = "doubled"


METHODS = (Doubled(),)
'''


def test_a_new_module_is_a_new_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's discovery, run on a package of one new module, finds its method."""
    package = tmp_path / "more_methods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "doubled.py").write_text(NEW_METHOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        found = discover("more_methods", [str(package)])
    finally:
        for name in [m for m in sys.modules if m.startswith("more_methods")]:
            del sys.modules[name]
    assert list(found) == ["doubled"] and isinstance(found["doubled"], Method)


def test_discovery_refuses_a_name_taken_twice(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "twice_methods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for stem in ("one", "two"):
        (package / f"{stem}.py").write_text(NEW_METHOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(TypeError, match="already taken"):
            discover("twice_methods", [str(package)])
    finally:
        for name in [m for m in sys.modules if m.startswith("twice_methods")]:
            del sys.modules[name]


def test_the_registry_is_the_list_of_methods() -> None:
    assert METHODS == NAMES == dd.METHODS
    assert NAMES[0] == "auto" and list(NAMES[1:]) == sorted(NAMES[1:])
    assert [m for m in NAMES if not get(m).unbiased] == ["truncated"]


@pytest.mark.parametrize("method", NAMES)
def test_every_method_fits_its_whole_k_range(method: str) -> None:
    """Every valid K gives maps of K columns whose build prediction is the predictor's; the
    K just outside the range is refused with the method's reason."""
    d = 6
    x, w = make_pair(n=300, m=40, d=d, seed=1, dtype="float64")
    mx, mw = dd.block_moments(x), dd.block_moments(w)
    chosen = get(method)
    low, high = chosen.k_range(d)
    top = high if high is not None else d + 3
    predictor = chosen.predictor(Statistics(mx, mw, "oas"))
    for k in range(low, top + 1):
        model = dd.build(mx, mw, k, method, seed=2, shrinkage="oas")
        assert model.x.matrix.shape == model.w.matrix.shape == (d, k)
        assert model.info["predicted"][method] == pytest.approx(predictor.mse(k), rel=1e-12,
                                                                abs=0.0)
        assert np.isfinite(model.info["predicted"][method])
    for k in ([low - 1] if low > 1 else []) + ([high + 1] if high is not None else []):
        assert chosen.k_refusal(k, d)
        with pytest.raises(dd.DdrpError, match=f"K={k} is too"):
            check_k(k, d, method)
