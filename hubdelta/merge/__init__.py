"""Merge plans: which models of a space to merge (pure, numpy), and the merge itself (torch, lazily)."""
