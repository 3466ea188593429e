"""``python -m emofuse`` runs the command-line interface."""

from emofuse.cli import main

if __name__ == "__main__":
    main()
