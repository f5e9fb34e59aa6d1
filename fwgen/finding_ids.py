"""The ids of ``fwgen lint``'s findings, in the order docs/lint.md lists them: what a
policy's ``acknowledge:`` may name. The checks live in ``fwgen.lint_checks``, which the
policy loader must not import (the linter reads policies); tests/test_lint.py keeps the
two lists equal."""

IDS = (
    "shadowed", "redundant", "partly-overridden", "unauthorized-port", "ssh-lockout", "rdp-lockout",
    "no-dns-out", "no-ntp-out", "dhcpv6-replies", "dhcpv4-client", "dhcpv4-renew", "dhcpv6-solicit",
    "ipv4-only-any", "icmp-state", "log-on-monitor", "wide-open", "reject-log-rate", "published-ports-closed",
    "unused-acknowledge",
)
