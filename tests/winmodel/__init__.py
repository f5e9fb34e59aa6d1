"""A strict, executable model of Windows Firewall and of the cmd.exe/netsh subset that
fwgen's Windows scripts use (see ``model.py``)."""
