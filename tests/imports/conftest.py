from __future__ import annotations

import pytest
from django.utils import translation

from shequn.members import imports


@pytest.fixture(autouse=True)
def _data_dir(settings, tmp_path):
    """Uploaded files go to a fresh data directory; messages are read in English."""
    settings.DATA_DIR = tmp_path / "data"
    with translation.override("en"):
        yield


@pytest.fixture
def run():
    """Create a job for ``text`` (str → UTF-8, or bytes) and run it in process; return
    (report, outcomes by row number)."""

    def _run(ws, text, *, kind="members", dry_run=False, filename=None, chunk_rows=None, progress=None):
        data = text.encode("utf-8") if isinstance(text, str) else text
        job = imports.create_import_job(ws, kind, filename or f"{kind}.csv", data, dry_run=dry_run, enqueue=False)
        outcomes = []
        report = imports.run_import(job, progress, on_row=outcomes.append, chunk_rows=chunk_rows)
        return report, {o.row: o for o in outcomes}

    return _run
