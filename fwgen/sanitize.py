"""Make policy free text safe for each platform's syntax.

Policy names and prefixes are already restricted by the policy schema; free text
(descriptions and comments) is not, so every target passes it through here. The rule
is the same everywhere: a character the platform could read as syntax never reaches
the output, and length limits are applied here rather than by silent truncation in
the kernel tools (which can cut a UTF-8 character in half).
"""

from __future__ import annotations

import re


def _unchanged(text: str, limit: int, unsafe: re.Pattern[str]) -> bool:
    """True when sanitizing would return ``text`` as it is (the common case, checked
    with a few C-level scans): short printable ASCII, single-spaced, nothing unsafe."""
    return (
        len(text) <= limit and text.isascii() and text.isprintable() and "  " not in text
        and text[:1] != " " and text[-1:] != " " and unsafe.search(text) is None
    )


def _one_line(text: str) -> str:
    if not text.isprintable():  # rare: only then look at each character
        text = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(text.split())


def _truncate_bytes(text: str, limit: int) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore").rstrip()


_NFT_UNSAFE = re.compile(r'"')


def nft_comment(text: str) -> str:
    """nft comments: double-quoted, no escape for ``"`` inside, at most 128 bytes."""
    if _unchanged(text, 128, _NFT_UNSAFE):
        return text
    return _truncate_bytes(_one_line(text).replace('"', "'"), 128)


_IPT_UNSAFE = re.compile(r"[\"'\\`$]")


def iptables_comment(text: str) -> str:
    """iptables-restore comments: no quotes or backslashes (its tokenizer reads them),
    no newline, at most 255 bytes (the kernel's limit)."""
    if _unchanged(text, 255, _IPT_UNSAFE):
        return text
    return _truncate_bytes(_IPT_UNSAFE.sub("_", _one_line(text)), 255)


_WINDOWS_UNSAFE = re.compile(r"[^A-Za-z0-9 _.,:/()+=@#-]")


def windows_text(text: str, limit: int = 200) -> str:
    """cmd.exe and netsh: no ``% & | < > ^ "`` or anything else outside a small safe
    alphabet, which also keeps the script pure ASCII for any code page."""
    return _WINDOWS_UNSAFE.sub("_", _one_line(text))[:limit].rstrip()


def shell_comment(text: str, limit: int = 200) -> str:
    """A line of a ``#``-comment header (iptables-restore, nft): one printable line."""
    return _truncate_bytes(_one_line(text), limit)
