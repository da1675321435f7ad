"""``python -m fastmlp``: the same as the ``fastmlp`` command (see :mod:`fastmlp.cli`)."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
