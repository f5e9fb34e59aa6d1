"""Words nft's parser will not accept as a table name.

Found by offering every word of nft(8) and of libnftables' strings to
`nft -c -f` as `table inet WORD` (nft 1.0.6, Debian 12), plus keywords added by later
nft releases. nft also refuses names that start with a digit, and has no quoting for
table names, so a policy whose name nft cannot read gets a located error at build time
instead of an output file that fails to load.
"""

NFT_KEYWORDS = frozenset({
    "accept", "add", "all", "and", "arp", "bridge", "cgroup", "chain", "comment", "constant",
    "continue", "counter", "cpu", "create", "ct", "day", "define", "delete", "describe",
    "destroy", "device", "devices", "dnat", "drop", "dst", "dup", "dynamic", "ecn", "element",
    "elements", "ether", "exists", "expires", "exthdr", "fib", "flags", "flow", "flowtable",
    "flush", "frag", "fwd", "gc-interval", "get", "goto", "handle", "hbh", "hook", "hour",
    "ibriport", "ibrname", "icmp", "icmpv6", "iif", "iifgroup", "iifname", "iiftype",
    "include", "index", "inet", "insert", "interval", "ip", "ip6", "ipsec", "jhash", "jump",
    "last", "limit", "list", "log", "lt", "map", "mark", "masquerade", "meta", "meter", "mh",
    "missing", "monitor", "netdev", "nftrace", "not", "notrack", "numgen", "obriport",
    "obrname", "offload", "oif", "oifgroup", "oifname", "oiftype", "or", "osf", "pkttype",
    "policy", "position", "priority", "queue", "quota", "random", "redefine", "redirect",
    "reject", "rename", "replace", "reset", "return", "rt", "rt0", "rt2", "rtclassid", "rule",
    "ruleset", "secmark", "set", "size", "skgid", "skuid", "snat", "socket", "srh", "symhash",
    "synproxy", "table", "tcp", "th", "time", "timeout", "tproxy", "type", "typeof", "udp",
    "undefine", "update", "vlan", "vmap", "xt",
})
