"""Where the GDC authentication token comes from, for whoever downloads controlled-access files.

Open-access TCGA slides need no token. Controlled-access files (e.g. germline variants, raw
sequencing) need the token the GDC Data Portal hands out after an eRA Commons login
("Download Token" in the user menu); it is valid for 30 days.

The token is read, in this order, from an explicit token file, the ``GDC_TOKEN`` environment
variable (the token itself) or the ``GDC_TOKEN_FILE`` environment variable (a path). Its value is
never logged nor put in an error message; a token file readable by group or others triggers a
warning, since anyone who can read it can download data under the owner's authorisation.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from mmsurv.gdc.redact import register_secret

log = logging.getLogger(__name__)

TOKEN_ENV = "GDC_TOKEN"
TOKEN_FILE_ENV = "GDC_TOKEN_FILE"
TOKEN_HEADER = "X-Auth-Token"

HOW_TO_GET_A_TOKEN = (
    "log in to the GDC Data Portal (https://portal.gdc.cancer.gov) with your eRA Commons account, "
    "choose 'Download Token' in the user menu, and pass the file with --token-file or the "
    f"{TOKEN_FILE_ENV} environment variable (or the token itself in {TOKEN_ENV})"
)


class GdcTokenError(ValueError):
    """The token file is missing, unreadable or empty (the message never contains the token)."""


def read_token_file(path: str | os.PathLike) -> str:
    """Read a token file, warning when its permissions let group or others read it."""
    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii", errors="strict")
    except FileNotFoundError:
        raise GdcTokenError(f"GDC token file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise GdcTokenError(f"cannot read GDC token file {path}: {type(error).__name__}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "GDC token file %s is accessible by group/others (mode %s); restrict it with: chmod 600 %s",
            path, oct(stat.S_IMODE(mode)), path,
        )
    token = text.strip()
    if not token or any(ch.isspace() for ch in token):
        raise GdcTokenError(f"GDC token file {path} does not hold a single token (empty or several words)")
    return token


def load_token(
    token_file: str | os.PathLike | None = None, *, environ: Mapping[str, str] | None = None
) -> str | None:
    """The token from ``token_file``, else ``$GDC_TOKEN``, else ``$GDC_TOKEN_FILE``; ``None`` if none is set."""
    environ = os.environ if environ is None else environ
    token = None
    if token_file:
        token = read_token_file(token_file)
    elif environ.get(TOKEN_ENV, "").strip():
        token = environ[TOKEN_ENV].strip()
    elif environ.get(TOKEN_FILE_ENV, "").strip():
        token = read_token_file(environ[TOKEN_FILE_ENV].strip())
    register_secret(token)  # from now on redacted from every message, log record and error
    return token
