"""``python -m mmsurv`` runs the command-line interface."""

from mmsurv.cli import main

raise SystemExit(main())
