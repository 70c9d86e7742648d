"""`python -m cli`: the same as the `pkictl` console script (how `serve --workers`
starts its children with the interpreter it runs on)."""

from cli.main import main

main()
