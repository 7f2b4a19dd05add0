"""The code of docs/extending.md's "A channel or fading model of your own" runs and does what it says."""

import re

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from pfl_app.protocol import COHORT_NODE_IDS_KEY, WIRELESS_COHORT_KEY
from pfl_app.records import from_arrayrecord, to_arrayrecord
from pfl_app.wireless import FADING_MODELS, client_rng, draw_fading_power, transmit, with_overrides
from pfl_app.wireless.mod import WirelessMod, client_channel, wireless_mod

from ..helpers import TINY

SECTION = "## A channel or fading model of your own"


def _blocks(project_dir):
    text = (project_dir / "docs" / "extending.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```py\n(.*?)```", section, flags=re.S)


def _round_trip(mod, cohort):
    ctx = Context(run_id=1, node_id=11, node_config={"partition-id": 1, "num-partitions": 4}, state=RecordDict(),
                  run_config={**TINY, "wireless.profile": "5g-urban"})
    msg = Message(RecordDict({
        "arrays": to_arrayrecord({"w": np.zeros(5000, np.float32)}),
        "config": ConfigRecord({"server-round": 1}),
        WIRELESS_COHORT_KEY: ConfigRecord({COHORT_NODE_IDS_KEY: cohort}),
    }), dst_node_id=11, message_type="train")

    def app(m, c):
        return Message(RecordDict({"arrays": m.content["arrays"],
                                   "metrics": MetricRecord({"num-examples": 1, "train-seconds": 1.0})}), reply_to=m)

    reply = mod(msg, ctx, app)
    assert np.all(from_arrayrecord(reply.content["arrays"])["w"] == 0.0)
    return dict(reply.content["wireless"])


def test_the_channel_example_in_the_docs_runs(flower_identity, project_dir):
    fading, channel = _blocks(project_dir)
    namespace: dict = {}
    try:
        exec(compile(fading, "docs/extending.md", "exec"), namespace)
        # Registered under its name, and drawn through a link profile like a built-in model.
        assert FADING_MODELS["shadowed-rayleigh"] is namespace["shadowed_rayleigh"]
        profile = with_overrides("lte-cell-edge", fading="shadowed-rayleigh")
        sent = transmit(client_rng(0, 0, 1, "down"), profile, 10, "down")
        assert sent.fading_power == float(namespace["shadowed_rayleigh"](client_rng(0, 0, 1, "down")))
        gains = draw_fading_power(np.random.default_rng(1), "shadowed-rayleigh", size=400_000)
        sigma = 4.0 * np.log(10) / 10
        # Var = E[s^2] E[e^2] - 1 = 2 exp(sigma^2) - 1: more than Rayleigh's 1.
        assert gains.var() == pytest.approx(2 * np.exp(sigma**2) - 1, rel=0.1)

        exec(compile(channel, "docs/extending.md", "exec"), namespace)
        shared_uplink = namespace["SharedUplink"]
        mod = WirelessMod(lambda cfg, c, n: shared_uplink(client_channel(cfg, c, n).profile, seed=cfg.seed,
                                                          client_id=c, num_clients=n))
        alone, shared = _round_trip(wireless_mod, [11]), _round_trip(mod, [10, 11, 12, 13])
        # A quarter of the band: a quarter of the noise (+6 dB), and a lower rate; the downlink as it was.
        assert shared["snr-db-up"] == pytest.approx(alone["snr-db-up"] + 10 * np.log10(4))
        assert shared["rate-bps-up"] < alone["rate-bps-up"]
        assert shared["rate-bps-down"] == alone["rate-bps-down"]
        assert _round_trip(mod, [11]) == alone  # alone in its round, it is the built-in link
    finally:
        FADING_MODELS.pop("shadowed-rayleigh", None)
