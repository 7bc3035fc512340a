"""Background work of the conversations domain."""

from __future__ import annotations

from django_tasks import task


@task()
def tag_member(workspace_id: int, identity: dict[str, str], tag: str, rule_id: int) -> bool:
    """Apply an auto-reply rule's tag to the member it answered (enqueued after the message's
    transaction commits). Idempotent: tagging twice leaves one tag."""
    from shequn.core.models import Workspace

    from .services import apply_rule_tag

    workspace = Workspace.objects.filter(pk=workspace_id).first()
    if workspace is None:
        return False
    return apply_rule_tag(workspace, identity, tag, rule_id)


@task()
def send_incident_notification(notification_id: int) -> str:
    """Send an incident notification's messages (enqueued after the notification commits). Resumes
    after its cursor when run again; each message is keyed per incident and member."""
    from .models import IncidentNotification
    from .services import run_notification

    row = IncidentNotification.objects.select_related("workspace").filter(pk=notification_id).first()
    if row is None:
        return "missing"
    return run_notification(row.workspace, row.pk).status
