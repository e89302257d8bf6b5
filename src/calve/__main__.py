"""`python -m calve ...` is the `calve` command."""

from calve.cli.main import main

main()
