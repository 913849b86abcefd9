"""The frozen app's entry point: started as `edgevl` it runs the CLI, as `edgevl-gui` the desktop app - the same
things the pip install's two scripts start. `edgevl-gui` is a link to `edgevl` on Linux and a second, windowed
executable on Windows and macOS; the name it was started by tells them apart (argv[0], which a link keeps)."""

import sys
from pathlib import Path

if Path(sys.argv[0]).stem == "edgevl-gui":
    from edgevl.gui.app import main
else:
    from edgevl.cli import main

sys.exit(main())
