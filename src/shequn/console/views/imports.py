"""CSV import (with dry run) and its progress page, and CSV export."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render

from shequn.console import queries
from shequn.console.access import console_view
from shequn.console.errors import error_text
from shequn.console.forms import ImportForm
from shequn.core.errors import ShequnError
from shequn.core.models import Role
from shequn.members import imports
from shequn.members.models import ImportKind

ERROR_ROWS_SHOWN = 1000
SPOOL_IN_MEMORY_BYTES = 4 * 1024 * 1024
STREAM_BLOCK_CHARS = 64 * 1024


@console_view(read=Role.OPERATOR)
def import_list(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    if request.method == "POST":
        form = ImportForm(request.POST, request.FILES)
        if form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                job = imports.create_import_job(ws, form.cleaned_data["kind"], upload.name, upload.read(),
                                                dry_run=form.cleaned_data["dry_run"], user=request.user)
            except ShequnError as exc:
                form.add_error(None, error_text(exc))
            else:
                return redirect("console:import_job", slug=ws.slug, job_id=job.pk)
    else:
        form = ImportForm()
    return render(request, "console/imports/list.html", {
        "form": form, "jobs": queries.import_jobs(ws), "kinds": ImportKind.choices,
    })


@console_view(read=Role.OPERATOR)
def import_job(request: HttpRequest, job_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    job = queries.import_job(ws, job_id)
    return render(request, "console/imports/job.html", {
        "job": job, "progress": queries.import_progress(job), "errors": job.errors[:ERROR_ROWS_SHOWN],
    })


@console_view(read=Role.OPERATOR)
def import_status(request: HttpRequest, job_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    return JsonResponse(queries.import_progress(queries.import_job(ws, job_id)))


@console_view(read=Role.OPERATOR)
def export(request: HttpRequest, kind: str) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    if kind not in ImportKind.values:
        raise Http404
    writer = imports.export_members_csv if kind == ImportKind.MEMBERS else imports.export_interactions_csv
    # The export reads the tables in keyset chunks; its output is spooled (in memory up to a few MB, on
    # disk beyond) and then streamed, so neither the table nor the file is ever held in memory whole.
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES, mode="w+", encoding="utf-8", newline="")
    spool.write("\ufeff")  # byte-order mark: spreadsheet programs then read the Chinese text correctly
    writer(ws, spool)
    spool.seek(0)
    response = StreamingHttpResponse(_chunks(spool), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{ws.slug}-{kind}.csv"'
    return response


def _chunks(spool: IO[str]) -> Iterator[bytes]:
    with spool:
        while block := spool.read(STREAM_BLOCK_CHARS):
            yield block.encode("utf-8")
