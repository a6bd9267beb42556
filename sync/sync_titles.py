"""Employee titles (the configured bPREH title column, e.g. udEmpTitle) -> SafetyAmp
user titles.

Key: the title's name, compared without case and surrounding blanks, so "Foreman" and
"foreman " are one title. Only titles of active employees are wanted. Titles are
never renamed or removed: a user title may be referenced by history in SafetyAmp.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sync.base import BaseSync, Desired, Rejected, fingerprint
from sync.ports import Row
from sync.vista import is_active_employee, title_key
from utils.data_validator import InvalidValue, clean_name, shown_key


class TitleSync(BaseSync):
    name = "titles"
    collection = "user_titles"
    key_field = "name"
    compare_fields = ()  # matched without case; a spelling difference is not worth a write

    def key_of(self, row: Row) -> str | None:
        return title_key(row.get("name"))

    @classmethod
    def key_from_text(cls, text: str) -> str:
        key = title_key(text)
        if key is None:
            raise InvalidValue("a title is needed (the key is blank)")
        return key

    def inputs(self) -> dict[str, Callable[[], Any]]:
        return {"employees": self.viewpoint.employees}

    def load(self) -> Desired:
        rows = self.ctx.source("employees", self.viewpoint.employees)
        out = Desired(source_count=len(rows))
        refused: set[str] = set()
        for row in rows:
            if not is_active_employee(row, self.ctx.today):
                continue
            raw = row.get("Title")
            key = title_key(raw)
            if key is None or key in out.records or key in refused:
                continue
            try:
                name = clean_name(raw if isinstance(raw, str) else str(raw), "Title", 100)
            except InvalidValue as exc:
                refused.add(key)
                out.rejected.append(Rejected(shown_key(key), f"title: {exc.reason}", ("Title",)))
                continue
            if name is None:
                continue
            out.records[key] = {"name": name}
            out.fingerprints[key] = fingerprint(name)
        return out
