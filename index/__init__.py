"""hubdelta.index: the only code that touches LanceDB (see docs/architecture.md)."""
