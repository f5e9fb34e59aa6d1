"""The nft keyword list (fwgen/targets/nft_keywords.py) is what nft itself refuses.

Every candidate word - each word of nft(8), of libnftables' strings (its keyword table
among them), the IANA protocol keywords, and the list itself - is offered to ``nft -c``
as ``table inet WORD``. A word nft refuses must be in ``NFT_KEYWORDS`` (else a policy of
that name builds and then fails ``nft -f``); a word of the list that this nft accepts
must be a keyword of a later nft release (``LATER_KEYWORDS``). So the list cannot drift
from the nft that loads fwgen's files.
"""

from __future__ import annotations

import csv
import gzip
import re
import shutil
from pathlib import Path

from fwgen.policy import POLICY_NAME
from fwgen.targets.nft_keywords import LATER_KEYWORDS, NFT_KEYWORDS, OTHER_TABLES
from tests.kernel.netns import Namespace

ROOT = Path(__file__).resolve().parents[2]
WORD = re.compile(r"[a-z][a-z0-9_-]*")


def candidates() -> list[str]:
    words: set[str] = set(NFT_KEYWORDS) | set(OTHER_TABLES)
    nft = shutil.which("nft")
    assert nft, "nft is not installed"
    libraries = [p for p in Path("/usr/lib").rglob("libnftables.so*") if p.is_file()]
    assert libraries, "libnftables not found under /usr/lib"
    for library in libraries:
        words |= {m.group().decode() for m in re.finditer(rb"[a-z][a-z0-9_-]*", library.read_bytes())}
    for manual in Path("/usr/share/man").glob("man8/nft.8*"):
        text = gzip.decompress(manual.read_bytes()) if manual.suffix == ".gz" else manual.read_bytes()
        words |= set(WORD.findall(text.decode("utf-8", "replace").lower()))
    protocols = ROOT.parent / "shared" / "iana" / "protocol-numbers-1.csv"
    bundled = ROOT / "fwgen" / "data" / "protocol-numbers-1.csv"
    for source in (p for p in (bundled, protocols) if p.exists()):
        with source.open(encoding="utf-8", newline="") as handle:
            words |= {row["Keyword"].strip().lower() for row in csv.DictReader(handle)}
    return sorted(w for w in words if POLICY_NAME.fullmatch(w) and not w[0].isdigit())


def refused(ns: Namespace, words: list[str]) -> set[str]:
    """The words ``nft -c`` refuses as a table name. nft reports at most ten errors a
    run, so each run goes on after the last line it reported."""
    found: set[str] = set()
    rest = list(words)
    while rest:
        proc = ns.run(["nft", "-c", "-f", "-"], input="".join(f"table inet {w}\n" for w in rest), check=False)
        lines = [int(m.group(1)) for m in re.finditer(r"^[^:\n]*:(\d+):\d+", proc.stderr, re.M)]
        if proc.returncode == 0 or not lines:
            assert proc.returncode == 0, proc.stderr
            break
        found |= {rest[line - 1] for line in lines}
        rest = rest[max(lines):]
    return found


def test_the_keyword_list_is_what_nft_refuses() -> None:
    words = candidates()
    assert len(words) > 1000  # the manual and the library were read
    with Namespace() as ns:
        found = refused(ns, words)
    assert found - NFT_KEYWORDS == set(), "nft refuses these names: add them to NFT_KEYWORDS"
    assert NFT_KEYWORDS - found <= LATER_KEYWORDS, "this nft accepts these: remove them from NFT_KEYWORDS"
    assert {"esp", "ah", "comp", "sctp", "dccp", "udplite", "igmp"} <= found  # the names the audit found


def test_other_tools_tables_are_names_nft_accepts() -> None:
    """They are refused for whom they belong to, not for syntax: nft would load them."""
    with Namespace() as ns:
        assert refused(ns, sorted(OTHER_TABLES)) == set()
