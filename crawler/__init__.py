"""hubdelta.crawler: follows tracked base models through Hub metadata into the index.

See docs/architecture.md.
"""
