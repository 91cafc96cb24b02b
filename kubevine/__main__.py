"""``python -m kubevine`` is the ``kubevine`` command."""

from kubevine.cli import main

raise SystemExit(main())
