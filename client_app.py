"""The Flower ClientApp of pfl-app. Wiring only: the logic lives in pfl_app.client."""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from pfl_app.client.personalized_client import handle_evaluate, handle_train
from pfl_app.faults import fault_injection_mod
from pfl_app.quiet import quiet_libraries
from pfl_app.wireless.mod import wireless_mod

quiet_libraries()
# Every train message and its reply cross the client's simulated radio link; injected
# faults (off unless configured) happen on the client, inside it.
app = ClientApp(mods=[wireless_mod, fault_injection_mod])


@app.train()
def train(msg: Message, context: Context) -> Message:
    return handle_train(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return handle_evaluate(msg, context)
