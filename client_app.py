"""The Flower ClientApp of pfl-app. Wiring only: the logic lives in pfl_app.client
(task tuning in task_tuning, RLHF in rlhf_tuning)."""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from pfl_app.client import handlers
from pfl_app.faults import fault_injection_mod
from pfl_app.quiet import quiet_libraries
from pfl_app.wireless.mod import WirelessMod, client_channel

quiet_libraries()
# Every train message and its reply cross the client's simulated radio link (the channel
# wireless.channel names, else the built-in link model); injected faults (off unless
# configured) happen on the client, inside it.
app = ClientApp(mods=[WirelessMod(client_channel), fault_injection_mod])


@app.train()
def train(msg: Message, context: Context) -> Message:
    return handlers(context)[0](msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return handlers(context)[1](msg, context)
