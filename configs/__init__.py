"""Shipped FlexPrefill YAML presets
(package data; load them with ``load_config(name)``).
"""
