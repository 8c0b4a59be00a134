"""API tokens (``--api-tokens FILE``): long random secrets sent as ``Authorization: Bearer ...``.

The file holds only their sha256, one per line with an optional name (``sha256:<64 hex> [name]``; ``#`` starts a
comment), so reading the file does not give the tokens away. A plain sha256 is enough because the tokens are
random 256-bit values, not passwords a person picks: there is nothing to guess. The name labels the token's
requests in ``/metrics`` and picks its rate-limit bucket; a token without one is named by its hash's first
digits.

``python -m sdlocal.api.tokens FILE [NAME]`` makes a new token, appends its hash to FILE and prints the token
once.
"""

from __future__ import annotations

import hashlib
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

PREFIX = "sha256:"


class TokenFileError(ValueError):
    """A tokens file that cannot be used: says which line and what to write instead."""


@dataclass(frozen=True)
class ApiToken:
    digest: str  # the sha256 hex of the token
    name: str


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def read_tokens(path: Path) -> list[ApiToken]:
    """The tokens in ``path``; ``TokenFileError`` naming the line for anything that is not a hash and a name."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TokenFileError(f"--api-tokens: cannot read {path} ({exc.strerror or exc}). Make one with "
                             f"`python -m sdlocal.api.tokens {path} NAME`.") from None
    tokens: list[ApiToken] = []
    names: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        digest, _, name = line.partition(" ")
        digest, name = digest.strip().lower(), name.strip()
        hexpart = digest[len(PREFIX):] if digest.startswith(PREFIX) else ""
        if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
            raise TokenFileError(f"--api-tokens: {path} line {number}: expected 'sha256:<64 hex digits> [name]', "
                                 "never the token itself. Make a token with "
                                 f"`python -m sdlocal.api.tokens {path} NAME`.")
        name = name or f"token-{hexpart[:8]}"
        if name in names:
            raise TokenFileError(f"--api-tokens: {path} line {number}: the name {name!r} is used twice; give each "
                                 "token its own name (it labels the token's requests in /metrics).")
        names.add(name)
        tokens.append(ApiToken(hexpart, name))
    return tokens


def match_token(presented: str, tokens: list[ApiToken]) -> ApiToken | None:
    """The token whose hash is ``presented``'s (every hash compared in constant time), or None."""
    digest = token_digest(presented).encode()
    found = None
    for token in tokens:
        if secrets.compare_digest(digest, token.digest.encode()):
            found = token
    return found


def new_token(path: Path, name: str = "") -> str:
    """A new random token; its hash (and name) appended to ``path``, which is made if missing."""
    token = "sdl_" + secrets.token_urlsafe(32)
    path = Path(path)
    existing = read_tokens(path) if path.exists() else []
    if name and any(t.name == name for t in existing):
        raise TokenFileError(f"--api-tokens: {path} already has a token named {name!r}; pick another name.")
    line = f"{PREFIX}{token_digest(token)}" + (f" {name}" if name else "") + "\n"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line)
    return token


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 2 or args[0].startswith("-"):
        print("usage: python -m sdlocal.api.tokens FILE [NAME]  (appends a new token's hash to FILE, prints the "
              "token once)", file=sys.stderr)
        return 2
    try:
        token = new_token(Path(args[0]), args[1] if len(args) > 1 else "")
    except TokenFileError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(token)
    print(f"(its hash is in {args[0]}; the token is not kept anywhere: copy it now)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
