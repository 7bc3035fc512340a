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
