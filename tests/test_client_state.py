import numpy as np
from flwr.app import Context, RecordDict

from pfl_app.client.state import ClientState


def _ctx():
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})


def test_state_is_found_as_of_a_round_even_after_a_later_one_was_saved(tmp_path):
    st = ClientState(_ctx(), tmp_path)
    assert st.load(5) is None
    st.save({"w": np.full(2, 1.0, np.float32)}, 1)
    st.save({"w": np.full(2, 2.0, np.float32)}, 2)
    assert st.load(2)["w"].tolist() == [2, 2]  # from memory
    fresh = ClientState(_ctx(), tmp_path)  # a restarted client: only the disk is left
    assert fresh.load(1)["w"].tolist() == [1, 1]
    assert ClientState(_ctx(), tmp_path).load(2)["w"].tolist() == [2, 2]
    assert ClientState(_ctx(), tmp_path).load(0) is None


def test_redoing_a_round_keeps_the_state_it_started_from(tmp_path):
    st = ClientState(_ctx(), tmp_path)
    st.save({"w": np.full(2, 1.0, np.float32)}, 1)
    st.save({"w": np.full(2, 2.0, np.float32)}, 2)
    # a resumed run redoes round 2 from round 1's state, and saves round 2 again
    again = ClientState(_ctx(), tmp_path)
    start = again.load(1)
    again.save({"w": start["w"] + 5}, 2)
    assert ClientState(_ctx(), tmp_path).load(1)["w"].tolist() == [1, 1]
    assert ClientState(_ctx(), tmp_path).load(2)["w"].tolist() == [6, 6]
