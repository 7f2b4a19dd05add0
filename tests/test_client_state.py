from pathlib import Path

import numpy as np
import pytest

from pfl_app.client.state import ClientState, saved_round


def _w(value):
    return {"w": np.full(2, value, np.float32)}


def test_state_is_found_as_of_a_round_even_after_a_later_one_was_saved(tmp_path):
    st = ClientState(tmp_path)
    assert st.load(5) is None
    st.save(_w(1.0), 1)
    st.save(_w(2.0), 2)
    assert st.load(2)["w"].tolist() == [2, 2]
    fresh = ClientState(tmp_path)  # a restarted client: the disk is all there is, always
    assert fresh.load(1)["w"].tolist() == [1, 1]
    assert ClientState(tmp_path).load(2)["w"].tolist() == [2, 2]
    assert ClientState(tmp_path).load(0) is None


def test_redoing_a_round_keeps_the_state_it_started_from(tmp_path):
    st = ClientState(tmp_path)
    st.save(_w(1.0), 1)
    st.save(_w(2.0), 2)
    # a resumed run redoes round 2 from round 1's state, and saves round 2 again
    again = ClientState(tmp_path)
    start = again.load(1)
    again.save({"w": start["w"] + 5}, 2)
    assert ClientState(tmp_path).load(1)["w"].tolist() == [1, 1]
    assert ClientState(tmp_path).load(2)["w"].tolist() == [6, 6]


def test_a_crash_between_writing_and_committing_a_save_leaves_the_previous_state_usable(tmp_path, monkeypatch):
    st = ClientState(tmp_path)
    st.save(_w(1.0), 1)
    real_replace = Path.replace

    def crash_on_commit(self, target):
        if self.name.endswith(".tmp"):  # the new file is written; the rename that commits it dies
            raise KeyboardInterrupt("killed")
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", crash_on_commit)
    with pytest.raises(KeyboardInterrupt):
        st.save(_w(2.0), 2)
    monkeypatch.undo()
    # round 1's state moved aside to .previous before the crash: still found, for round 1 and 2
    assert not (tmp_path / "local_tensors.safetensors").exists()
    assert ClientState(tmp_path).load(1)["w"].tolist() == [1, 1]
    assert ClientState(tmp_path).load(2)["w"].tolist() == [1, 1]
    # the redone round saves over the leftover temporary file and keeps round 1 as previous
    ClientState(tmp_path).save(_w(3.0), 2)
    assert ClientState(tmp_path).load(2)["w"].tolist() == [3, 3]
    assert ClientState(tmp_path).load(1)["w"].tolist() == [1, 1]
    assert saved_round(tmp_path / "local_tensors.previous.safetensors") == 1


def test_a_half_written_temporary_file_is_never_read(tmp_path):
    st = ClientState(tmp_path)
    st.save(_w(1.0), 1)
    (tmp_path / "local_tensors.safetensors.tmp").write_bytes(b"\x00garbage")  # killed mid-write
    assert ClientState(tmp_path).load(2)["w"].tolist() == [1, 1]
    ClientState(tmp_path).save(_w(2.0), 2)
    assert ClientState(tmp_path).load(2)["w"].tolist() == [2, 2]
    assert not (tmp_path / "local_tensors.safetensors.tmp").exists()


def test_each_name_keeps_its_own_files(tmp_path):
    ClientState(tmp_path).save(_w(1.0), 1)
    ClientState(tmp_path, "optimizer_state").save(_w(7.0), 1)
    assert ClientState(tmp_path).load()["w"].tolist() == [1, 1]
    assert ClientState(tmp_path, "optimizer_state").load()["w"].tolist() == [7, 7]
