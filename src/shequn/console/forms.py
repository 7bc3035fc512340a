"""Console forms: they check the shape of the input; the services check the meaning."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from shequn.core.models import Role
from shequn.interactions.models import InteractionType
from shequn.members.models import ImportKind, Strength

SCORE_CHOICES = [(i, str(i)) for i in range(1, 6)]
MAX_IMPORT_BYTES = 200 * 1024 * 1024


class ConsoleForm(forms.Form):
    """A checkbox reads “[x] label”, so its label gets no trailing colon."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            if isinstance(field, forms.BooleanField):
                field.label_suffix = ""


class MemberFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label=_("Search"))
    tag = forms.CharField(required=False, max_length=64, label=_("Tag"))
    keyword = forms.CharField(required=False, max_length=512, label=_("Keyword"))
    stage = forms.CharField(required=False, max_length=32, label=_("Stage"))
    strength = forms.TypedChoiceField(required=False, label=_("Strength"), coerce=int, empty_value=None,
                                      choices=[("", "")] + [(c.value, c.label) for c in Strength])
    attribute = forms.CharField(required=False, max_length=200, label=_("Attribute"),
                                help_text=_("key=value"))
    source = forms.CharField(required=False, max_length=64, label=_("Source channel"))
    after = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    before = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)

    def clean_attribute(self) -> str:
        value: str = self.cleaned_data["attribute"].strip()
        if value:
            key, sep, _rest = value.partition("=")
            if not sep or not key.strip():
                raise forms.ValidationError(_("The attribute filter must look like key=value."))
        return value


def split_names(text: str) -> list[str]:
    """Tags typed as “a, b；c” or one per line."""
    return [part.strip() for part in re.split(r"[,，;；\n]", text) if part.strip()]


class TagAddForm(forms.Form):
    names = forms.CharField(max_length=1000, label=_("Add tags"), help_text=_("Separate several tags with commas."))

    def clean_names(self) -> list[str]:
        names = split_names(self.cleaned_data["names"])
        if not names:
            raise forms.ValidationError(_("Enter at least one tag."))
        return names


class TagRemoveForm(forms.Form):
    name = forms.CharField(max_length=64)


class StageForm(forms.Form):
    stage = forms.CharField(max_length=32, label=_("Stage"))


class MergeForm(forms.Form):
    other_id = forms.IntegerField(min_value=1, label=_("Member id to merge into this one"))


class TouchpointForm(ConsoleForm):
    code = forms.SlugField(max_length=64, label=_("Code"), help_text=_("Letters a-z, digits, - and _; cannot change later."))
    name = forms.CharField(max_length=200, label=_("Name"))
    channel = forms.CharField(max_length=64, label=_("Channel"), help_text=_("wechat, store, web, phone, email …"))
    function = forms.CharField(max_length=64, required=False, label=_("Function"),
                               help_text=_("marketing, sales, service …"))
    segment = forms.CharField(max_length=64, required=False, label=_("Customer segment"))
    lifecycle_stage = forms.ChoiceField(required=False, label=_("Lifecycle stage"))
    importance = forms.TypedChoiceField(choices=SCORE_CHOICES, coerce=int, initial=3, label=_("Importance (1–5)"))
    complexity = forms.TypedChoiceField(choices=SCORE_CHOICES, coerce=int, initial=3, label=_("Complexity (1–5)"))
    consistency = forms.TypedChoiceField(choices=SCORE_CHOICES, coerce=int, initial=3, label=_("Consistency (1–5)"))
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), label=_("Description"))

    def __init__(self, *args: Any, stage_choices: list[tuple[str, str]], editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["lifecycle_stage"].choices = [("", "—"), *stage_choices]
        if editing:
            self.fields["code"].widget.attrs["readonly"] = True


class RuleForm(ConsoleForm):
    name = forms.CharField(max_length=100, label=_("Name"))
    interaction_type = forms.ChoiceField(choices=InteractionType.choices, label=_("Interaction type"))
    direction = forms.ChoiceField(required=False, label=_("Direction"),
                                  choices=[("", _("Either")), ("in", _("Inbound")), ("out", _("Outbound"))])
    channel = forms.CharField(max_length=64, required=False, label=_("Channel"), help_text=_("Empty = any channel."))
    touchpoint = forms.ChoiceField(required=False, label=_("Touchpoint"))
    min_amount = forms.DecimalField(required=False, min_value=0, max_digits=14, decimal_places=2, label=_("Minimum amount"))
    min_count = forms.IntegerField(min_value=1, initial=1, label=_("Nth such interaction"),
                                   help_text=_("1 = the first one, 2 = the second one …"))
    target_stage = forms.ChoiceField(label=_("Move to stage"))
    allow_backward = forms.BooleanField(required=False, label=_("May move the member back"))
    priority = forms.IntegerField(initial=100, label=_("Priority"), help_text=_("Lower runs first."))
    enabled = forms.BooleanField(required=False, initial=True, label=_("Enabled"))

    def __init__(self, *args: Any, stage_choices: list[tuple[str, str]], touchpoint_choices: list[tuple[str, str]],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["target_stage"].choices = stage_choices
        self.fields["touchpoint"].choices = [("", _("Any touchpoint")), *touchpoint_choices]


class ImportForm(ConsoleForm):
    kind = forms.ChoiceField(choices=ImportKind.choices, label=_("What the file holds"))
    file = forms.FileField(
        label=_("File"), widget=forms.ClearableFileInput(attrs={"accept": ".csv,.jsonl,.ndjson,.json,text/csv"}),
        help_text=_("CSV in UTF-8 or GB18030 with a header row; interactions may also be JSON lines (.jsonl). "
                    "At most 200 MB."))
    dry_run = forms.BooleanField(required=False, initial=True, label=_("Dry run: check every row, change nothing"))

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_IMPORT_BYTES:
            raise forms.ValidationError(_("The file is larger than 200 MB."))
        return upload


class ApiKeyForm(ConsoleForm):
    name = forms.CharField(max_length=100, label=_("Name"), help_text=_("What uses this key, e.g. “POS sync”."))
    role = forms.ChoiceField(choices=Role.choices, initial=Role.OPERATOR, label=_("Role"))
