"""The frozen app's entry point: started as `edgevl` it runs the CLI, as `edgevl-gui` the desktop app - the same
things the pip install's two scripts start. `edgevl-gui` is a link to `edgevl` on Linux and a second, windowed
executable on Windows and macOS; the name it was started by tells them apart (argv[0], which a link keeps)."""

import os
import sys
from pathlib import Path

# The Hub's Xet client is left out of the bundle (edgevl.spec): downloads go over HTTPS without the hint to install it
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")

if Path(sys.argv[0]).stem == "edgevl-gui":
    from edgevl.gui.app import main
else:
    from edgevl.cli import main

sys.exit(main())
