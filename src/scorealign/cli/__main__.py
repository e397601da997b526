"""``python -m scorealign.cli``: the ``scorealign`` command."""

from scorealign.cli.app import main

if __name__ == "__main__":
    main()
