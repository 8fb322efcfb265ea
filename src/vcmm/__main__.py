"""``python -m vcmm``: the ``vcmm`` command, for environments without the console script."""

from vcmm.cli import main

if __name__ == "__main__":
    main()
