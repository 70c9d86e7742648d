"""`python -m bench.timewarp`: see bench/timewarp/__init__.py."""

from bench.timewarp.cli import main

raise SystemExit(main())
