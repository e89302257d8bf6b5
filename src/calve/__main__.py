"""`python -m calve ...` is the `calve` command."""

from calve.cli.app import main

main()
