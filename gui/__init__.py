"""The desktop app (PySide6). Empty until the GUI issue lands; it will only call the edgevl library."""
