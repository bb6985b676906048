"""Send the selection to TOPCAT / Aladin over SAMP (pyvo.samp) when a hub is running; absent otherwise."""
from __future__ import annotations

import os
import tempfile
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


def send_votable(payload: bytes, name: str) -> list[str]:
    """Broadcast a VOTable (`table.load.votable`); returns the ids of the clients that were notified."""
    from pyvo.samp import SAMPIntegratedClient  # astropy.samp moved to pyvo (deprecated in astropy 8)

    folder = Path(tempfile.mkdtemp(prefix="galaxy-explorer-samp-"))
    path = folder / f"{name}.vot"
    path.write_bytes(payload)  # kept: receivers read the file after the notification returns
    client = SAMPIntegratedClient(name="Galaxy explorer", description="galaxy selection")
    client.connect(pool_size=1)
    try:
        return client.notify_all({"samp.mtype": "table.load.votable",
                                  "samp.params": {"url": path.as_uri(), "name": name}})
    finally:
        client.disconnect()


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
        except Exception as err:  # a hub that went away must not break the page
            message.object = f"SAMP: {err}"

    button.on_click(send)
    return pn.Column(button, message)
