"""The bundled registry's file format, shared by the reader (``fwgen.registry``) and the
bundler (``fwgen.registry_sources``) without either importing the other's module."""

from __future__ import annotations

import os

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
BUNDLE_PATH = os.path.join(DATA_DIR, "registry.json")
SOURCE_COPY_PATH = os.path.join(DATA_DIR, "service-names-port-numbers.xml.gz")

BUNDLE_FORMAT = 2
COLUMNS = (
    "name", "port_lo", "port_hi", "protocol", "description", "assignee", "unauthorized", "note",
    "registered", "modified", "reference",
)
