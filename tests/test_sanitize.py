"""Policy free text made safe for each platform: the fast path (text that needs no
change is returned as is) must agree with the full transformation on every input."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fwgen import sanitize

# Mostly the characters that matter: spaces, quotes, shell specials, controls, non-ASCII.
TEXT = st.text(alphabet=st.sampled_from(list("ab z09 \"'`$\\\t\n\r\x0b\x1f\x85\xa0é€")) | st.characters(),
               max_size=300)


def _full_nft(text: str) -> str:
    return sanitize._truncate_bytes(sanitize._one_line(text).replace('"', "'"), 128)


def _full_iptables(text: str) -> str:
    return sanitize._truncate_bytes(sanitize._IPT_UNSAFE.sub("_", sanitize._one_line(text)), 255)


@settings(max_examples=2000)
@given(TEXT)
@example("web (edge.yaml:12) allow")
@example(" leading")
@example("trailing ")
@example("two  spaces")
@example("x" * 129)
@example("x" * 256)
@example('say "hi"')
@example("tab\there")
@example("nbsp\xa0here")
def test_fast_path_agrees_with_the_full_transformation(text: str) -> None:
    assert sanitize.nft_comment(text) == _full_nft(text)
    assert sanitize.iptables_comment(text) == _full_iptables(text)


def test_output_is_one_safe_line() -> None:
    nasty = 'a"b\'c`d$e\\f\ng\r\x00h' + "é" * 200
    for text in (sanitize.nft_comment(nasty), sanitize.iptables_comment(nasty)):
        assert text.isprintable() and "\n" not in text
    assert '"' not in sanitize.nft_comment(nasty)
    assert not set("\"'`$\\") & set(sanitize.iptables_comment(nasty))
    assert len(sanitize.nft_comment(nasty).encode()) <= 128
    assert len(sanitize.iptables_comment(nasty).encode()) <= 255
