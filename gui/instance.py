"""One running app per user. A second start (for example `edgevl-gui --capture` bound to a key in the desktop's
keyboard settings) hands its request to the running app over a local socket and exits."""

from __future__ import annotations

import getpass

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

SERVER_NAME = f"edgevl-gui-{getpass.getuser()}"
TIMEOUT_MS = 500


def send_to_running_app(message: str, name: str = SERVER_NAME) -> bool:
    """True when a running app received `message` ("show" or "capture")."""
    socket = QLocalSocket()
    socket.connectToServer(name)
    if not socket.waitForConnected(TIMEOUT_MS):
        return False
    socket.write(message.encode())
    delivered = socket.waitForBytesWritten(TIMEOUT_MS)
    socket.disconnectFromServer()
    return delivered


class InstanceServer(QObject):
    message = Signal(str)

    def __init__(self, name: str = SERVER_NAME, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._server = QLocalServer(self)
        QLocalServer.removeServer(name)  # a socket file left by a crashed app would block listen()
        self._server.listen(name)
        self._server.newConnection.connect(self._accept)

    def _accept(self) -> None:
        # The sender writes its few bytes right after connecting, so reading them at once never waits long.
        socket = self._server.nextPendingConnection()
        if socket.bytesAvailable() or socket.waitForReadyRead(TIMEOUT_MS):
            self.message.emit(bytes(socket.readAll().data()).decode(errors="replace"))
        socket.abort()
        socket.deleteLater()
