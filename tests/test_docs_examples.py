"""The code in docs/extending.md runs, and the method it defines behaves as it says."""

import re

import numpy as np
from flwr.app import ConfigRecord

from pfl_app.client.task_tuning import handle_train
from pfl_app.models.personalized import shared_model_bundle, tensor_group
from pfl_app.records import from_arrayrecord, to_arrayrecord
from pfl_app.strategies import STRATEGIES

from .helpers import FakeGrid, client_context, server_message


def test_extending_example_runs_and_its_method_sends_what_it_says(flower_identity, tiny_cfg, tmp_path, project_dir):
    text = (project_dir / "docs" / "extending.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    namespace: dict = {}
    try:
        assert len(code.splitlines()) <= 40  # a method in at most 40 lines, in a file of its own
        exec(compile(code, "docs/extending.md", "exec"), namespace)
        strategy = namespace["AdaptersAndA"](method="adapters-and-a", min_available_nodes=1, min_train_nodes=1)
        assert strategy.shared_groups == ("adapter", "lora_A")
        bundle = shared_model_bundle(tiny_cfg)
        glob = bundle.initial_tensors(strategy.shared_groups)
        (msg,) = strategy.configure_train(1, to_arrayrecord(glob), ConfigRecord({"run-dir": str(tmp_path)}), FakeGrid([5]))
        train = server_message("train", msg.content["config"]["shared-groups"], glob, tmp_path)
        train.content["config"]["trained-groups"] = msg.content["config"]["trained-groups"]
        reply = handle_train(train, client_context(5, 0))
        assert {tensor_group(k) for k in from_arrayrecord(reply.content["arrays"])} == {"adapter", "lora_A"}
        bad = {k: np.full_like(v, 5e3) for k, v in glob.items()}
        assert strategy.check_update(5, bad) == "a value above 1e3"
    finally:
        STRATEGIES.pop("adapters-and-a", None)
