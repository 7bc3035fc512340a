"""Serve third-party front-end files taken from installed packages (pinned in pyproject), never
from a CDN and never committed: ``vendor/plotly.min.js`` comes from the ``plotly`` wheel."""

from __future__ import annotations

from pathlib import Path

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

VENDOR_FILES = {
    "vendor/plotly.min.js": Path(plotly.__file__).parent / "package_data" / "plotly.min.js",
}


class _OneFileStorage(FileSystemStorage):
    def __init__(self, path: Path, name: str) -> None:
        super().__init__(location=str(path.parent))
        self.prefix = str(Path(name).parent)
        self._name = path.name


class VendorFinder(BaseFinder):
    def check(self, **kwargs):  # type: ignore[no-untyped-def]
        return []

    def find(self, path, find_all=False, **kwargs):  # type: ignore[no-untyped-def]
        found = VENDOR_FILES.get(path)
        if found is None:
            return [] if find_all else None
        return [str(found)] if find_all else str(found)

    def list(self, ignore_patterns):  # type: ignore[no-untyped-def]
        for name, path in VENDOR_FILES.items():
            yield path.name, _OneFileStorage(path, name)
