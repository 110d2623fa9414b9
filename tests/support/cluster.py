"""Throwaway PostgreSQL clusters for the tests: the shipped ones, for now."""

from __future__ import annotations

from chatstore.embedded import Cluster as ThrowawayCluster
from chatstore.embedded import throwaway

__all__ = ["ThrowawayCluster", "throwaway"]
