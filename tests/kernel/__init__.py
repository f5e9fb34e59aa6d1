"""Kernel-level tests: rule files applied in throwaway network namespaces."""
