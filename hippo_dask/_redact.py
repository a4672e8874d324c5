"""Masking secrets in text: passwords in URLs, and the credentials of storage options.

Every message hippo_dask writes (errors, warnings, log lines, reprs, the dashboard's title)
that may show a storage URL or a storage error passes through here, so there is one rule for
what counts as a secret:

- the password of a URL's user information: ``ftp://alice:hunter2@host/runs`` reads
  ``ftp://alice:***@host/runs`` (a user name alone, ``sftp://alice@host``, is not a secret);
- the string values of storage options under credential-like keys (``key``, ``secret``,
  ``token``, ``password``, ``credential``, ``auth``, ``session``, at any depth, and every
  value below such a key), wherever they appear in the text. Values shorter than 4
  characters are left alone: masking them would garble unrelated words.

Examples
--------
>>> mask_url("ftp://alice:hunter2@example.org/runs")
'ftp://alice:***@example.org/runs'
>>> Redactor({"secret": "s3cr3t-value"})("denied for s3cr3t-value")
'denied for ***'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["MASK", "Redactor", "mask_url", "secret_values"]

MASK: Final = "***"
_SECRET_KEY: Final = re.compile(r"key|secret|token|passw|credential|auth|session", re.IGNORECASE)
# scheme://user:password@ -> keep the scheme and user, mask the password (up to the last '@'
# before the host: passwords may hold '@' when not percent-encoded)
_PASSWORD: Final = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*):(?P<pw>[^/\s]*)@")
_SHORTEST: Final = 4


def mask_url(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _PASSWORD.sub(lambda m: f"{m.group('head')}:{MASK}@", text)


def secret_values(options: Mapping[str, Any], *, below_secret: bool = False) -> list[str]:
    """String values under credential-like keys of (nested) ``options``, longest first."""
    found: set[str] = set()
    for key, value in options.items():
        secret = below_secret or bool(_SECRET_KEY.search(str(key)))
        if isinstance(value, Mapping):
            found.update(secret_values(value, below_secret=secret))
        elif secret and isinstance(value, str) and len(value) >= _SHORTEST:
            found.add(value)
    return sorted(found, key=len, reverse=True)


class Redactor:
    """Masks URL passwords and the secrets of one set of storage options in any text.

    Parameters
    ----------
    storage_options
        The fsspec options whose credential values must never be shown.
    """

    __slots__ = ("_secrets",)

    def __init__(self, storage_options: Mapping[str, Any] | None = None) -> None:
        self._secrets = secret_values(storage_options or {})

    def __call__(self, text: str) -> str:
        text = mask_url(str(text))
        for value in self._secrets:
            text = text.replace(value, MASK)
        return text
