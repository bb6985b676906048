"""Send the selection to TOPCAT / Aladin over SAMP when a hub is running; absent otherwise.

pyvo.samp, not astropy.samp (deprecated in astropy 8).
"""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import threading
import xmlrpc.client
from pathlib import Path

import panel as pn

from explorer.data import ExplorerData
from explorer.selection_table import export_bytes
from explorer.state import SelectionState


def hub_running(environ: dict | None = None, home: Path | None = None) -> bool:
    """A SAMP hub advertises itself through $SAMP_HUB or the standard-profile lockfile ~/.samp."""
    environ = os.environ if environ is None else environ
    if environ.get("SAMP_HUB"):
        return True
    return ((home or Path.home()) / ".samp").is_file()


def hub_errors() -> tuple[type[Exception], ...]:
    """What a stopped, restarted or unreachable hub answers with (pyvo's SAMPProxyError is an xmlrpc Fault)."""
    # pyvo is imported only once a hub is used, not at every server start
    from pyvo.samp.errors import SAMPClientError, SAMPHubError

    return (OSError, xmlrpc.client.Error, SAMPClientError, SAMPHubError)


class _Sender:
    """One SAMP client per server process, registered while it runs, as TOPCAT and Aladin stay registered.

    A hub delivers a notification on its own threads after ``notify_all`` returns, and drops it when the sender has
    already unregistered: a client connected per message loses messages on a loaded machine. Reconnects when the
    hub ($SAMP_HUB) changes or stops answering (a restarted hub forgets the old registration).
    """

    def __init__(self):
        self.client, self.hub, self.lock = None, None, threading.Lock()

    def notify_all(self, message: dict) -> list[str]:
        with self.lock:
            try:
                return self._connected().notify_all(message)
            except hub_errors():
                self.close()  # the hub restarted (it forgot us) or went away: register once more
            return self._connected().notify_all(message)

    def _connected(self):
        if self.client is None or self.hub != os.environ.get("SAMP_HUB"):
            from pyvo.samp import SAMPIntegratedClient

            self.close()
            client = SAMPIntegratedClient(name="Galaxy explorer", description="galaxy selection", callable=False)
            client.connect(pool_size=1)
            self.client, self.hub = client, os.environ.get("SAMP_HUB")
        return self.client

    def close(self):
        if self.client is not None:
            with contextlib.suppress(*hub_errors()):  # a hub that went away cannot be told
                self.client.disconnect()
        self.client = self.hub = None


SENDER = _Sender()
atexit.register(SENDER.close)


class _Outbox:
    """The VOTables this server process has sent: kept while it runs (a receiver reads the file after the
    notification returns, maybe much later), all in one folder that is removed when the process exits."""

    def __init__(self):
        self.folder, self.sent, self.lock = None, 0, threading.Lock()

    def write(self, name: str, payload: bytes) -> Path:
        with self.lock:
            if self.folder is None:
                self.folder = Path(tempfile.mkdtemp(prefix="galaxy-explorer-samp-"))
            self.sent += 1
            path = self.folder / f"{name}-{self.sent}.vot"
        path.write_bytes(payload)
        return path

    def remove(self):
        with self.lock:
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


OUTBOX = _Outbox()
atexit.register(OUTBOX.remove)  # `panel serve` exits normally on Ctrl-C and SIGTERM


def send_votable(payload: bytes, name: str) -> list[str]:
    """Broadcast a VOTable (`table.load.votable`); returns the ids of the clients that were notified."""
    path = OUTBOX.write(name, payload)
    return SENDER.notify_all({"samp.mtype": "table.load.votable",
                              "samp.params": {"url": path.as_uri(), "name": name}})


def samp_button(data: ExplorerData, state: SelectionState) -> pn.Column | None:
    """A "Send to TOPCAT / Aladin" button, or None when no hub runs (checked when the page opens)."""
    if not hub_running():
        return None
    button = pn.widgets.Button(label="Send selection over SAMP", color="success", variant="outline")
    message = pn.pane.Str("", styles={"font-size": "11px"})

    def send(_):
        try:
            notified = send_votable(export_bytes(data, state, "vot"), "galaxy-selection")
            message.object = f"sent {len(state.selected):,} galaxies to {len(notified)} SAMP client(s)"
        except hub_errors() as err:  # a hub that went away must not break the page
            message.object = f"SAMP: {err}"

    button.on_click(send)
    return pn.Column(button, message)
