from fwgen.cli import entry

entry()
