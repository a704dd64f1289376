"""``python -m hubdelta`` runs the CLI (same as the ``hubdelta`` console script)."""

from hubdelta.cli import main

main()
