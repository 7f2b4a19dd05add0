from pfl_app.faults import faulty_clients


def test_fault_draws_are_seeded_disjoint_and_sized():
    fail, corrupt = faulty_clients(0, 1, 10, 0.2, 0.3)
    assert len(fail) == 2 and len(corrupt) == 3 and not fail & corrupt
    assert (fail, corrupt) == faulty_clients(0, 1, 10, 0.2, 0.3)
    assert faulty_clients(0, 2, 10, 0.2, 0.3) != (fail, corrupt)
    assert faulty_clients(0, 1, 10, 0.0, 0.0) == (set(), set())
