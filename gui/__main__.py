"""`python -m edgevl.gui` starts the desktop app."""

import sys

from edgevl.gui.app import main

sys.exit(main())
