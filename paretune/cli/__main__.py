"""``python -m paretune.cli``: the ``paretune`` command."""

import sys

from paretune.cli import main

sys.exit(main())
