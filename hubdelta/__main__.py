"""``python -m hubdelta`` runs the CLI (same as the ``hubdelta`` console script)."""

from hubdelta.cli import main

if __name__ == "__main__":  # not when a spawned child process (the embedder's downloads) imports it
    main()
