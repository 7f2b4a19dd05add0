"""Link profiles: validation, presets, overrides and heterogeneous populations."""

import dataclasses
import math

import pytest

from pfl_app.wireless import (
    PROFILES,
    LinkProfile,
    get_profile,
    mean_snr_db,
    poor_clients,
    profile_for_client,
    with_overrides,
)


def test_presets_exist_and_are_valid():
    assert {"ideal", "wifi", "lte-cell-edge", "5g-urban"} <= set(PROFILES)
    for name, p in PROFILES.items():
        assert p.name == name
        assert p.validate() is p


def test_presets_are_ordered_sensibly():
    up = {name: mean_snr_db(p, "up") for name, p in PROFILES.items()}
    assert up["ideal"] > up["wifi"] > up["5g-urban"] > up["lte-cell-edge"]
    for p in PROFILES.values():
        assert mean_snr_db(p, "down") >= mean_snr_db(p, "up")


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("distance_m", 0.0, r"\(0.0"),
        ("distance_m", math.nan, "distance_m"),
        ("path_loss_exponent", 12.0, "10.0"),
        ("fading", "nakagami", "rayleigh, rician, none"),
        ("rician_k", -1.0, "rician_k"),
        ("efficiency", 1.5, r"\(0.0, 1.0\]"),
        ("efficiency", 0.0, "efficiency"),
        ("packet_bytes", 0, ">= 1"),
        ("packet_bytes", 1.5, "integer"),
        ("error_model", "magic", "outage, bler"),
        ("outage_snr_db", math.inf, "or -inf"),
        ("bler_slope_db", 0.0, "bler_slope_db"),
        ("max_retransmissions", -1, ">= 0"),
        ("bandwidth_up_hz", -1e6, "bandwidth_up_hz"),
        ("tx_power_dbm", "23", "tx_power_dbm"),
        ("overhead_s", -0.1, "overhead_s"),
        ("device_power_w", True, "device_power_w"),
    ],
)
def test_validation_names_the_field(field, value, allowed):
    with pytest.raises(ValueError, match=field) as err:
        with_overrides("wifi", **{field: value})
    assert err.match(allowed)


def test_constructor_validates():
    with pytest.raises(ValueError, match="reference_distance_m"):
        LinkProfile(name="x", distance_m=10.0, path_loss_exponent=3.0, reference_loss_db=40.0,
                    reference_distance_m=0.0)
    with pytest.raises(ValueError, match="name"):
        LinkProfile(name="", distance_m=10.0, path_loss_exponent=3.0, reference_loss_db=40.0)


def test_profiles_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PROFILES["wifi"].distance_m = 1.0


def test_with_overrides_copies_and_rejects_unknown_fields():
    p = with_overrides("wifi", distance_m=30.0, max_retransmissions=2)
    assert p.distance_m == 30.0 and p.max_retransmissions == 2
    assert PROFILES["wifi"].distance_m != 30.0
    with pytest.raises(ValueError, match="distanse_m") as err:
        with_overrides("wifi", distanse_m=3.0)
    assert err.match("allowed: name, distance_m")
    with pytest.raises(ValueError, match="ideal, wifi"):
        get_profile("satellite")


def test_ideal_never_drops():
    p = PROFILES["ideal"]
    assert p.fading == "none" and p.outage_snr_db == -math.inf
    assert mean_snr_db(p, "up") > 60


def test_profile_for_client_is_deterministic_and_spreads_distances():
    n = 10
    kwargs = dict(distance_spread=(20.0, 200.0), seed=5)
    profiles = [profile_for_client("5g-urban", c, n, **kwargs) for c in range(n)]
    again = [profile_for_client("5g-urban", c, n, **kwargs) for c in reversed(range(n))][::-1]
    assert profiles == again
    distances = sorted(p.distance_m for p in profiles)
    assert distances[0] == pytest.approx(20.0) and distances[-1] == pytest.approx(200.0)
    assert all(20.0 <= d <= 200.0 for d in distances)
    assert len(set(distances)) == n  # evenly spaced, one each
    # Distance is shuffled, not increasing with client id.
    assert [p.distance_m for p in profiles] != distances
    other_seed = [profile_for_client("5g-urban", c, n, distance_spread=(20.0, 200.0), seed=6)
                  for c in range(n)]
    assert other_seed != profiles


def test_profile_for_client_without_spread_keeps_base():
    assert profile_for_client("wifi", 3, 8) == PROFILES["wifi"]
    assert profile_for_client("wifi", 0, 1, distance_spread=(10.0, 30.0)).distance_m == 20.0


@pytest.mark.parametrize("n, fraction, expected", [(10, 0.3, 3), (100, 0.29, 29), (7, 0.0, 0),
                                                    (7, 1.0, 7), (4, 0.5, 2)])
def test_poor_fraction_is_honoured_exactly(n, fraction, expected):
    profiles = [profile_for_client("5g-urban", c, n, poor_fraction=fraction, seed=1,
                                   distance_spread=(50.0, 150.0)) for c in range(n)]
    poor = [p for p in profiles if p.name == "lte-cell-edge"]
    assert len(poor) == expected == len(poor_clients(n, fraction, seed=1))
    assert all(p == PROFILES["lte-cell-edge"] for p in poor)


def test_poor_choice_depends_on_seed_and_accepts_a_profile():
    assert poor_clients(20, 0.25, seed=0) != poor_clients(20, 0.25, seed=1)
    custom = with_overrides("wifi", name="far-wifi", distance_m=60.0)
    p = [profile_for_client("wifi", c, 4, poor_fraction=1.0, poor_profile=custom) for c in range(4)]
    assert all(x is custom for x in p)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(client_id=10, num_clients=10), "client_id"),
        (dict(client_id=0, num_clients=0), "num_clients"),
        (dict(client_id=0, num_clients=5, poor_fraction=1.5), "poor_fraction"),
        (dict(client_id=0, num_clients=5, distance_spread=(100.0, 10.0)), "distance_spread"),
        (dict(client_id=0, num_clients=5, poor_profile="nope"), "link profile"),
    ],
)
def test_profile_for_client_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        profile_for_client("wifi", **kwargs)
