"""``python -m app.cli_main`` = the ``enclave`` console script."""

from app.cli import main

if __name__ == "__main__":
    main()
