from __future__ import annotations

import pytest
from django.utils import translation

from shequn import cli as shequn_cli


@pytest.fixture(autouse=True)
def _english_and_data_dir(settings, tmp_path, monkeypatch):
    settings.DATA_DIR = tmp_path / "data"
    monkeypatch.setenv("SHEQUN_LANGUAGE", "en")
    yield
    translation.deactivate()


@pytest.fixture
def shequn(capsys):
    """Run ``shequn ARGS…`` in process; return (exit code, stdout, stderr)."""

    def _run(*args):
        capsys.readouterr()
        code = shequn_cli.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return _run
