"""The ICMP type names a policy may write (fwgen/icmp.py) are what the tools say.

``NAMES`` must be exactly the names both iptables (``iptables -p icmp -h``) and nft
(``nft describe icmp type``) accept for a family, with nft's numbers; every other name
either tool lists must be in ``TOOL_NAMES``, so a policy that uses it is answered with
the entry to write. What each name means to its tool is read back from the kernel: rules
using every name are loaded into a throwaway namespace and listed numerically.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from fwgen import icmp
from tests.kernel.netns import Namespace

FAMILY_WORDS = {4: ("iptables", "icmp", "icmp"), 6: ("ip6tables", "icmpv6", "icmpv6")}


def iptables_names(family: int) -> set[str]:
    tool, protocol, _ = FAMILY_WORDS[family]
    text = subprocess.run([tool, "-p", protocol, "-h"], capture_output=True, text=True, check=True).stdout
    listing = text.split("Valid ICMP" + ("v6" if family == 6 else "") + " Types:", 1)[1]
    names = set()
    for line in listing.splitlines():
        match = re.fullmatch(r"\s*([A-Za-z][A-Za-z0-9-]*)(?: \(([A-Za-z0-9-]+)\))?\s*", line)
        if match:
            names.update(n for n in match.groups() if n)
    names.discard("any")  # "every type": a policy omits icmp: for that
    assert len(names) > 15, listing
    return names


def nft_names(family: int) -> dict[str, int]:
    _, _, word = FAMILY_WORDS[family]
    text = subprocess.run(["nft", "describe", f"{word} type"], capture_output=True, text=True, check=True).stdout
    found = {m[1]: int(m[2]) for m in re.finditer(r"^\s+([a-z0-9-]+)\s+(\d+)\s*$", text, re.M)}
    assert "echo-request" in found, text
    return found


@pytest.mark.parametrize("family", [4, 6])
def test_shared_names_are_what_both_tools_accept(family: int) -> None:
    shared = iptables_names(family) & set(nft_names(family))
    assert set(icmp.NAMES[family]) == shared
    numbers = nft_names(family)
    assert {name: numbers[name] for name in shared} == icmp.NAMES[family]


@pytest.mark.parametrize("family", [4, 6])
def test_every_other_tool_name_has_a_hint(family: int) -> None:
    others = (iptables_names(family) | set(nft_names(family))) - set(icmp.NAMES[family])
    assert others == set(icmp.TOOL_NAMES[family])
    ipt = iptables_names(family)
    for name, (tool, _) in icmp.TOOL_NAMES[family].items():
        assert tool == ("nft" if name not in ipt else FAMILY_WORDS[family][0]), name


@pytest.mark.parametrize("family", [4, 6])
def test_every_name_means_its_entry_in_the_kernel(family: int) -> None:
    """Each iptables name (shared or its own) loaded and saved back is its entry; each
    nft name listed with -n is its number."""
    tool, protocol, word = FAMILY_WORDS[family]
    ipt = {n: str(v) for n, v in icmp.NAMES[family].items()}
    ipt |= {n: e for n, (t, e) in icmp.TOOL_NAMES[family].items() if t == tool}
    nft = {n: str(v) for n, v in icmp.NAMES[family].items()}
    nft |= {n: e for n, (t, e) in icmp.TOOL_NAMES[family].items() if t == "nft"}
    option = "--icmpv6-type" if family == 6 else "--icmp-type"
    with Namespace() as ns:
        order = sorted(ipt)
        rules = "".join(f"-A INPUT -p {protocol} {option} {name} -j ACCEPT\n" for name in order)
        ns.run([f"{tool}-restore"], input=f"*filter\n{rules}COMMIT\n")
        saved = [line for line in ns.run([f"{tool}-save"]).stdout.splitlines() if line.startswith("-A INPUT")]
        assert [line.split(option + " ", 1)[1].split()[0] for line in saved] == [ipt[n] for n in order]

        order = sorted(nft)
        body = "".join(f"{word} type {name} accept\n" for name in order)
        ns.run(["nft", "-f", "-"], input=f"table inet t {{\nchain c {{\n{body}}}\n}}\n")
        listed = re.findall(rf"{word} type (\d+) accept", ns.run(["nft", "-n", "list", "ruleset"]).stdout)
        assert listed == [nft[n] for n in order]
