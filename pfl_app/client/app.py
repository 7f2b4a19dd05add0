"""pfl-app's Flower ClientApp, importable from the installed package.

The project's ``client_app.py`` is this app, and so is a user's Flower app that names it in
its ``pyproject.toml`` (``clientapp = "pfl_app.client.app:app"``): the client of every
method, ours or theirs, is the same, steered by what the server's messages say.
"""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from ..faults import fault_injection_mod
from ..quiet import quiet_libraries
from ..wireless.mod import WirelessMod, client_channel
from . import handlers
from .privacy import local_dp_mod

quiet_libraries()
# Every train message and its reply cross the client's simulated radio link (the channel
# wireless.channel names, else the built-in link model); injected faults (off unless
# configured) happen on the client, inside it.
app = ClientApp(mods=[WirelessMod(client_channel), fault_injection_mod])


# Local DP (off unless dp.mode = local) noises the update inside the channel, before it leaves.
@app.train(mods=[local_dp_mod])
def train(msg: Message, context: Context) -> Message:
    return handlers(context)[0](msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return handlers(context)[1](msg, context)
