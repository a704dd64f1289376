"""The query side: nearest models, one model's record, the index's state, exports. Never imports torch."""
