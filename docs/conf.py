"""Sphinx configuration of dmlr's documentation site (``make docs``: ``sphinx-build -n -W --keep-going``).

The build needs no network: intersphinx reads the inventories kept in ``_intersphinx/`` (``make_inventories.py``
writes them from the installed libraries' own names and their sites' addresses). The notebooks of ``notebooks/`` and
the command reference are generated into the source tree when the build starts (both git-ignored).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import dmlr  # noqa: E402
import dmlr.cli  # noqa: E402

project = "dmlr"
author = "the dmlr developers"
copyright = "2026, the dmlr developers"
release = version = dmlr.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
    "sphinx_click",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "_templates", "_intersphinx", "jupyter_execute", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

html_theme = "pydata_sphinx_theme"
html_title = f"dmlr {release}"
html_theme_options = {
    "navigation_depth": 2,
    "show_toc_level": 2,
    "header_links_before_dropdown": 5,
    "navbar_align": "left",
}
html_show_sourcelink = False
html_static_path = ["_static"]
html_css_files = ["custom.css"]

autosummary_generate = True
autosummary_inherited_members = True  # MNLogitResults lists the post-estimation methods it inherits
autodoc_default_options = {"ignore-module-all": True}
autodoc_typehints = "none"  # the numpydoc sections give each parameter's type and shape
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = os.environ.get("DMLR_DOCS_EXECUTE", "force")  # "off": a quick look at prose
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_in_temp = True
nb_merge_streams = True

INVENTORIES = {
    "python": "https://docs.python.org/3/",
    "numpy": "https://numpy.org/doc/stable/",
    "scipy": "https://docs.scipy.org/doc/scipy/",
    "pandas": "https://pandas.pydata.org/docs/",
    "dask": "https://docs.dask.org/en/stable/",
    "distributed": "https://distributed.dask.org/en/stable/",
    "zarr": "https://zarr.readthedocs.io/en/stable/",
    "statsmodels": "https://www.statsmodels.org/stable/",
}
intersphinx_mapping = {name: (url, str(HERE / "_intersphinx" / f"{name}.inv")) for name, url in INVENTORIES.items()}

nitpicky = True
nitpick_ignore_regex = [("py:class", r".*[\[\]].*")]  # type expressions (``tuple[str, int]``), not references


def _cli_pages() -> None:
    """One page per command of ``dmlr`` (sphinx-click), and the index listing them."""
    out = HERE / "cli"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    commands = {o.name: a for a, o in vars(dmlr.cli).items() if isinstance(o, click.Command) and a != "main"}
    lines = ["# Command-line reference", "", "`dmlr COMMAND --help` prints the same text.", "", "```{toctree}",
             ":maxdepth: 1", "", *sorted(commands), "```", ""]  # fmt: skip
    (out / "index.md").write_text("\n".join(lines))
    for name, attr in commands.items():
        title = f"dmlr {name}"
        (out / f"{name}.rst").write_text(
            f"{title}\n{'=' * len(title)}\n\n.. click:: dmlr.cli:{attr}\n   :prog: dmlr {name}\n   :nested: full\n"
        )


def _notebooks() -> None:
    """The worked examples of ``notebooks/``, executed by the build (their outputs are stripped in git)."""
    out = HERE / "examples"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    books = sorted((ROOT / "notebooks").glob("*.ipynb"))
    for book in books:
        shutil.copy(book, out / book.name)
    lines = ["# Worked examples", "", "The notebooks of `notebooks/`, run when the site is built.", "",
             "```{toctree}", ":maxdepth: 1", "", *[b.stem for b in books], "```", ""]  # fmt: skip
    (out / "index.md").write_text("\n".join(lines))


_cli_pages()
_notebooks()


def _public_objects() -> set[int]:
    """The objects the API reference documents on their own pages (not again on their module's internals page)."""
    from dmlr.models.bootstrap import BootstrapResults
    from dmlr.results.hypothesis import ChiSquareTest
    from dmlr.results.margins import MarginalEffects
    from dmlr.results.prediction import PredictionResults
    from dmlr.results.summary import Summary

    objects = [getattr(dmlr, name) for name in dmlr.__all__]
    objects += [BootstrapResults, ChiSquareTest, MarginalEffects, PredictionResults, Summary]
    return {id(o) for o in objects}


PUBLIC = _public_objects()


def _skip(app, what, name, obj, skip, options):
    """Public objects are documented on their own pages, not again on their module's; scikit-learn's generated
    metadata-routing setters are scikit-learn's to document."""
    if what == "module" and id(obj) in PUBLIC:
        return True
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def _short_reference(app, env, node, contnode):
    """Resolve a docstring's short reference (``InputError``, ``MNLogitResults.fitted_rows``) to the one documented
    object whose full name ends with it; a reference that matches none, or several, stays a build error."""
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    parts = node["reftarget"].lstrip("~.").split(".")
    for start in range(len(parts)):
        suffix = ".".join(parts[start:])
        found = [
            full
            for full, entry in domain.objects.items()
            if (full == suffix or full.endswith("." + suffix)) and not entry.aliased  # one name per object
        ]
        if len(found) == 1:
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], found[0], node, contnode)
        if len(found) > 1:
            return None
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip)
    app.connect("missing-reference", _short_reference)
