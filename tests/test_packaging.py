"""Packaging: every package is installed, no generic top-level names, the public API, the licence."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, shared_path


def test_every_package_is_listed_in_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("steer", "ngram")
             for p in (ROOT / top).rglob("__init__.py")}
    assert found == listed


def test_no_generic_top_level_corpora_package(tmp_path):
    # Regression: installing steer put a top-level package named `corpora` on the path.
    # Checked in a fresh interpreter outside the checkout, which would shadow the install.
    code = ("import importlib.util, steer.catalog; print(importlib.util.find_spec('corpora') is None, "
            "'don_quixote' in steer.catalog.manifest())")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True"]


def test_public_api_at_the_top_level():
    import steer

    assert steer.__version__ and steer.__version__ != "0+unknown"
    for name in steer.__all__:
        assert getattr(steer, name) is not None, name
    for name in ["NGramStylePrior", "NGramTable", "load_corpus", "load_model", "base_perplexity",
                 "ConditionalBeam", "EditSpanGrammar", "extract_spans", "run_sweep"]:
        assert name in steer.__all__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        steer.nope  # noqa: B018


def test_licence_file_matches_pyproject():
    tomllib = pytest.importorskip("tomllib")
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0" in text
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == {"text": "Apache-2.0"}


@pytest.mark.slow
def test_quickstart_example_runs_as_written(tmp_path, smollm2):
    # The SmolLM2 GGUF, converted once by the `smollm2` fixture into this session's cache (which env holds).
    env = {**__import__("os").environ, "STEER_MODEL": str(shared_path("models", "smollm2-135m-instruct"))}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("[unsteered] The old man walked") for line in lines)
    assert any(line.startswith("[steered, lam=0.2] The old man walked") for line in lines)
    assert any(line.startswith("[contrastive+plausible, lam=2] The old man walked") for line in lines)
    assert (tmp_path / "quixote.safetensors").exists()
