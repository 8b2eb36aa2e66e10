from __future__ import annotations

from typing import Any

from django import forms

from console import importing
from console.dashboard import DEFAULT_WINDOW, WINDOWS
from endpoints_app.models import NAME_PATTERN


class DashboardFilters(forms.Form):
    """The dashboard's GET parameters: ?window=24h&consumer=search-team&endpoint=chat."""

    window = forms.ChoiceField(choices=[(w.key, w.label) for w in WINDOWS], required=False, initial=DEFAULT_WINDOW)
    consumer = forms.RegexField(NAME_PATTERN, required=False, max_length=255,
                                widget=forms.TextInput(attrs={"list": "console-consumers", "placeholder": "all"}))
    endpoint = forms.RegexField(NAME_PATTERN, required=False, max_length=255,
                                widget=forms.TextInput(attrs={"list": "console-endpoints", "placeholder": "all"}),
                                help_text="The endpoint that served the calls (a traffic route's calls count "
                                          "under its destinations).")

    def filters(self) -> dict[str, str]:
        """The valid parameters (a wrong one is dropped alone, and reported by the form's errors)."""
        if self.is_bound:
            self.is_valid()
        data: dict[str, Any] = getattr(self, "cleaned_data", {})
        return {"window": data.get("window") or DEFAULT_WINDOW, "consumer": data.get("consumer") or "",
                "endpoint": data.get("endpoint") or ""}


class ImportForm(forms.Form):
    file = forms.FileField(label="YAML file", help_text="The config file's schema, as load_config reads it.")
    source = forms.ChoiceField(
        label="Load as", required=False,
        help_text="Which file the entries belong to. A new upload's entries are marked as loaded from "
                  f"{importing.UPLOADS}/ and the file's name; choose a file the server loaded to update (and with "
                  "prune, delete) what that file made.")
    prune = forms.BooleanField(
        required=False, label="Prune",
        help_text="Delete the endpoints, routes and consumers that an earlier load of the same file made and that "
                  "this one no longer has (like load_config --prune). Entries made in the admin are never deleted.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        source = self.fields["source"]
        assert isinstance(source, forms.ChoiceField)
        source.choices = [("", "this upload (by its file name)"),
                                         *((path, path) for path in importing.known_sources())]

    def clean_file(self) -> str:
        upload = self.cleaned_data["file"]
        if upload.size > importing.MAX_BYTES:
            raise forms.ValidationError(f"The file is larger than {importing.MAX_BYTES // 1024} KiB.")
        try:
            return str(upload.read().decode("utf-8"))
        except UnicodeDecodeError:
            raise forms.ValidationError("The file is not UTF-8 text.") from None

    def source_path(self) -> str:
        upload = self.files.get("file")
        return str(self.cleaned_data.get("source") or importing.upload_source(getattr(upload, "name", "") or ""))


class ApplyForm(forms.Form):
    """The preview's hidden fields: the text (encrypted: importing.seal), the options and their signature
    (checked by importing.apply)."""

    text = forms.CharField(widget=forms.HiddenInput)
    source = forms.CharField(widget=forms.HiddenInput)
    prune = forms.BooleanField(widget=forms.HiddenInput, required=False)
    token = forms.CharField(widget=forms.HiddenInput)

    @classmethod
    def carrying(cls, preview: importing.Preview) -> ApplyForm:
        return cls(initial={"text": preview.sealed, "source": preview.source, "prune": preview.prune,
                            "token": preview.token})
