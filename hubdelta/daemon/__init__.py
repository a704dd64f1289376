"""``hubdelta daemon``: crawl, embed, report and compact on a schedule, in one process, for months."""
