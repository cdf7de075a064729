"""Sphinx configuration of ddrp's documentation site (``make docs``)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "cli")]  # the checkout's code, installed or not

import ddrp_dask  # noqa: E402

project = "ddrp"
author = "the ddrp developers"
copyright = "the ddrp developers"  # noqa: A001 (Sphinx's name)
release = version = ddrp_dask.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx_click",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_templates", "README.md"]
templates_path = ["_templates"]

myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

autosummary_generate = True
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "pydata_sphinx_theme"
html_title = f"ddrp {release}"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_static_path: list[str] = []

# scikit-learn adds set_*_request methods to every estimator class, with docstrings that
# refer to its own site's glossary
autodoc_default_options = {
    "exclude-members": "set_fit_request,set_transform_request,set_partial_fit_request"}
