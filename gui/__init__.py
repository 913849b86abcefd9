"""The desktop app (PySide6): capture, drop or paste an image and watch OCR, tables and captions stream in.

It only calls the edgevl library (`edgevl.api`); everything slow runs off the GUI thread. Start with
`edgevl gui` or `edgevl-gui`; `app.main` is the entry point. Layout:

- `app.py`         start-up: arguments, single instance, translations, theme, main window, tray icon
- `engine_host.py` the one owner of the loaded model: opens, runs and closes engines on one worker thread
- `jobs.py`        `Job`, a QRunnable with signals, for every piece of background work
- `capture.py`     screen-region capture: hide the app, screenshot every monitor, let the user drag a rectangle
- `tray.py`        the tray icon: the app stays there when the window closes; capture to the clipboard from it
- `screenshot/`, `clipboard/`  platform handlers behind a small protocol, tried in order (NormCap's idea)
- `history.py`, `settings.py`, `i18n.py`, `imaging.py`  storage, preferences, UI words, image conversions
- `screen_fit.py`  windows that fit the screen at any scaling and reopen where they were left
- `widgets/`       the windows and panels (main window, task bar, queue, result, history view, model manager...)
"""
