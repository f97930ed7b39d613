# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Replace a file whole: a reader (a concurrent run, a service starting) never sees half of it."""

from __future__ import annotations

import os
import tempfile


def write_atomically(path, data, mode):
    """Write ``data`` (bytes) to ``path`` with permissions ``mode``: into a temporary file beside it, renamed
    over it once complete. The temporary file is removed when anything fails (OSError propagates)."""
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
