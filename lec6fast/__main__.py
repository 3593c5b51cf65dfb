"""`python -m lec6fast bench` runs the same command as the `lec6fast` console script."""

from .cli import main

raise SystemExit(main())
