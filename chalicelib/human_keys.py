"""Human keys: a project's absolute path, in one spelling per directory (docs/identity.md).
Without dependencies: the archive workers and auth compare keys without loading the tools."""

import ntpath
import posixpath
import re
import unicodedata

_WINDOWS_PATH = re.compile(r"[A-Za-z]:[\\/]")


def is_path(value: str) -> bool:
    return value.startswith("/") or _WINDOWS_PATH.match(value) is not None


def normalize_human_key(value: str) -> str:
    """One spelling per directory, so that one directory is one project (docs/identity.md)."""
    value = unicodedata.normalize("NFC", value)  # café: macOS reports é as e + an accent (NFD), others as é
    if _WINDOWS_PATH.match(value):
        # Clients send C:\x, C:/x or c:\x for one directory. The form Windows itself reports (and
        # most stored keys have): upper-case drive letter, backslashes, no . or .. or doubled
        # separators. The rest keeps its case, as on POSIX: Shop and shop stay two projects.
        path = ntpath.normpath(value)
        return path[0].upper() + path[1:]
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path; pass the project's working directory, e.g. /home/me/repo")
    return posixpath.normpath(value).replace("//", "/")
