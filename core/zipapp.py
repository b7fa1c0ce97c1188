"""Zip applications that Python runs as they are (`python3 app.pyz`), the same bytes from the same files."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping


def zip_application(files: Mapping[str, bytes]) -> bytes:
    """An archive of `files` (name: content; one is `__main__.py`): sorted, with fixed times and modes."""
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as archive:
        for name, data in sorted(files.items()):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return raw.getvalue()
