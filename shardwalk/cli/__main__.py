"""``python -m shardwalk.cli``: the ``shardwalk`` command."""

import sys

from shardwalk.cli import main

sys.exit(main())
