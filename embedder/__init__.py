"""hubdelta.embedder: turns a queued model into its Delta Activations vector (see docs/architecture.md)."""
