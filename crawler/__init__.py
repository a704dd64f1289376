"""hubdelta.crawler: follows tracked base models through Hub metadata into the index (see docs/architecture.md)."""
