"""The frozen app's entry point. One analysis, two executables: `edgevl` runs the CLI, `edgevl-gui` (a windowed
executable on Windows and macOS) the desktop app - the same things the pip install's two scripts start."""

import sys
from pathlib import Path

if Path(sys.executable).stem == "edgevl-gui":
    from edgevl.gui.app import main
else:
    from edgevl.cli import main

sys.exit(main())
