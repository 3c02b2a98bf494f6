"""The gateway's token, kept in a file: what `counters serve` asks for and the command line sends.

Standard library only: the command line reads it without loading the service's modules.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

__all__ = ["read_token_file"]


def read_token_file(file: str) -> str:
    """The token in `file` (surrounding whitespace dropped). ConfigError if the file cannot be
    read or holds no token: one word of visible ASCII characters."""
    path = Path(file).expanduser()
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"--auth-token-file {path}: cannot read it: {error}") from None
    if not token or not token.isascii() or not token.isprintable() or " " in token:
        raise ConfigError(
            f"--auth-token-file {path} must hold one token of visible ASCII characters "
            "(make one: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token
