"""The web service: pages, the interactive map and the JSON API over the index (``hubdelta serve``)."""
