"""Atomic file and folder writes: a reader never sees half of a model."""

import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_path(final_path):
    """Yield a temporary path beside `final_path` (same extension, so savers
    that check it are satisfied); on success it replaces `final_path` in one
    rename, on failure it is removed and `final_path` is left as it was.
    Works for files and for folders (a SavedModel)."""
    final_path = os.path.abspath(os.fspath(final_path))
    folder, name = os.path.split(final_path)
    os.makedirs(folder, exist_ok=True)
    stem, extension = os.path.splitext(name)
    scratch = tempfile.mkdtemp(prefix=f".{stem}.", suffix=".partial", dir=folder)
    temporary = os.path.join(scratch, stem + extension)
    try:
        yield temporary
        if not os.path.exists(temporary):
            raise FileNotFoundError(f"Nothing was written to {temporary} for {final_path}")
        if os.path.isdir(final_path) and not os.path.islink(final_path):
            # A folder cannot be replaced by rename: move the old one aside first.
            old = final_path + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final_path, old)
            os.replace(temporary, final_path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, final_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
