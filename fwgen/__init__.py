"""fwgen: one reviewed firewall policy, compiled to iptables, nftables and Windows Firewall."""

__version__ = "1.4.0"
