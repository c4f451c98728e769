"""``python -m slamming.cli …``: the ``slamming`` command without its console script."""

from slamming.cli import main

if __name__ == "__main__":
    main()
