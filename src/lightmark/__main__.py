"""`python -m lightmark ...` (and `torchrun ... -m lightmark train CONFIG`): the command line."""
from lightmark.cli import main

raise SystemExit(main())
