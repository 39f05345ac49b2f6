"""Placeholder: replaced by the data-layer work (DatasetNode)."""
