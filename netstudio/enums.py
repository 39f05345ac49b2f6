"""``StrEnum`` for Python 3.10 and later: members are ``str``, equal to their values.

Kinds and states that used to be free strings (graph event kinds, param kinds, problem
severities) are enums of this type. A member compares equal to its old string, hashes like
it, prints as it (``str``, ``format``, f-strings) and is written by ``json`` as that
string, so project files and messages stay byte-identical.
"""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - exercised on Python 3.10 only
    class StrEnum(str, Enum):
        """What ``enum.StrEnum`` does on 3.11: ``str()``/``format()`` give the value."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)

__all__ = ["StrEnum"]
