"""Shared typing for DataFrame transformations."""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame

Transform = Callable[[DataFrame], DataFrame]
"""A step for ``df.transform``: pure, no reads, writes or actions."""
