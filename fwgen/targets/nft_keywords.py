"""Names nftables cannot give fwgen's table, and names other tools' tables have.

``NFT_KEYWORDS``: words nft's parser will not accept as a table name. They are what
`nft -c -f` refuses as `table inet WORD` (nft 1.0.6, Debian 12), plus ``LATER_KEYWORDS``,
which later nft releases made keywords. tests/kernel/test_nft_keywords.py asks nft
itself about every word of nft(8), of libnftables and of the IANA protocol keywords,
so the list cannot drift from the nft that loads the output. nft also refuses names
that start with a digit, and has no quoting for table names, so a policy whose name nft
cannot read gets a located error at build time instead of a file that fails to load.

``OTHER_TABLES``: names of the tables other software keeps in the same kernel. fwgen's
file replaces its table by deleting and redefining ``table inet NAME``, so a policy
named like one of these would delete that tool's rules (a policy named ``firewalld``
deletes firewalld's zones). fwgen refuses those names.
"""

LATER_KEYWORDS = frozenset({"destroy", "last"})  # keywords from nft 1.0.7 on

NFT_KEYWORDS = frozenset({
    "accept", "add", "ah", "all", "and", "arp", "auto-merge", "bridge", "cgroup", "chain",
    "comment", "comp", "constant", "continue", "counter", "cpu", "create", "ct", "daddr",
    "day", "dccp", "define", "delete", "describe", "destroy", "device", "devices", "dnat",
    "drop", "dst", "dup", "dynamic", "ecn", "element", "elements", "esp", "ether", "exists",
    "expires", "export", "exthdr", "fib", "flags", "flow", "flowtable", "flush", "frag",
    "frag-off", "fwd", "gc-interval", "get", "goto", "handle", "hbh", "hdrlength", "hook",
    "hour", "ibriport", "ibrname", "icmp", "icmpv6", "igmp", "iif", "iifgroup", "iifname",
    "iiftype", "import", "include", "index", "inet", "insert", "interval", "ip", "ip6",
    "ipsec", "jhash", "jump", "last", "le", "limit", "list", "log", "lt", "map", "mark",
    "masquerade", "meta", "meter", "mh", "missing", "monitor", "netdev", "nftrace", "not",
    "notrack", "numgen", "obriport", "obrname", "offload", "offset", "oif", "oifgroup",
    "oifname", "oiftype", "or", "osf", "pkttype", "policy", "position", "priority", "queue",
    "quota", "random", "redefine", "redirect", "reject", "rename", "replace", "reset",
    "return", "rt", "rt0", "rt2", "rtclassid", "rule", "ruleset", "sctp", "secmark", "set",
    "size", "skgid", "skuid", "snat", "socket", "srh", "symhash", "synproxy", "table",
    "tcp", "th", "time", "timeout", "tproxy", "type", "typeof", "udp", "udplite",
    "undefine", "update", "vlan", "vmap", "xt",
})

# table name -> the software that owns a table of that name (in the inet, ip or ip6
# family; fwgen refuses the name in any family: a reader would take one for the other)
OTHER_TABLES = {
    "filter": "Debian's stock /etc/nftables.conf (table inet filter) and iptables-nft",
    "nat": "iptables-nft", "mangle": "iptables-nft", "raw": "iptables-nft", "security": "iptables-nft",
    "broute": "ebtables-nft",
    "firewalld": "firewalld", "firewalld_policy_drop": "firewalld",
    "docker": "Docker", "docker-bridges": "Docker's nftables backend",
    "libvirt": "libvirt", "libvirt_network": "libvirt's nftables backend",
    "lxd": "LXD", "incus": "Incus",
    "netavark": "Podman (netavark)",
    "kube-proxy": "kube-proxy's nftables mode",
    "calico": "Calico's nftables data plane",
    "flannel-ipv4": "flannel", "flannel-ipv6": "flannel",
    "f2b-table": "fail2ban's nftables actions",
    "crowdsec": "the CrowdSec firewall bouncer", "crowdsec6": "the CrowdSec firewall bouncer",
    "sshguard": "sshguard",
    "nixos-fw": "the NixOS firewall",
    "fw4": "OpenWrt's fw4",
    "mullvad": "the Mullvad VPN app",
}
