"""Background work of the members domain."""

from __future__ import annotations

import logging

from django_tasks import task

from shequn.core.errors import ShequnError

from . import imports
from .models import ImportJob, ImportStatus

logger = logging.getLogger("shequn.imports")


@task()
def run_import_job(job_id: int) -> str:
    """Run the import job ``job_id`` and return its final status.

    Idempotent: a job that is done or failed is left alone. A job that is still marked running —
    because its worker stopped, or because the queue delivered the task twice — is resumed: a real
    import continues after its last committed chunk (each chunk and the job's counters commit together,
    and two runners of one job take turns chunk by chunk under a lock on the job row), a dry run starts
    over. A file that cannot be imported marks the job failed with the reason in ``job.message``.
    """
    job = ImportJob.objects.filter(pk=job_id).first()
    if job is None:
        logger.warning("Import job %s does not exist (deleted?)", job_id)
        return "missing"
    if job.status in (ImportStatus.DONE, ImportStatus.FAILED):
        return str(job.status)
    try:
        report = imports.run_import(job)
    except ShequnError as exc:
        logger.info("Import job %s failed: %s", job_id, exc.message)
        return str(ImportStatus.FAILED)
    return report.status
