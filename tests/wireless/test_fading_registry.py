"""The fading and packet-error registries: Nakagami-m, names, errors, and models of one's own."""

import math
import sys
import textwrap

import numpy as np
import pytest

from pfl_app.wireless import (
    FADING_KINDS,
    FADING_MODELS,
    LinkProfile,
    client_rng,
    draw_fading_power,
    fading_model,
    register_fading,
    transmit,
    with_overrides,
)
from pfl_app.wireless.packet_errors import ERROR_MODELS_BY_NAME

N_DRAWS = 200_000


def _ks_distance(a, b):
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    cdf_a, cdf_b = np.searchsorted(a, grid, "right") / a.size, np.searchsorted(b, grid, "right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


# 1.95 sqrt(2 / n): the two-sample KS test's critical value at the 0.1% level.
KS_CRITICAL = 1.95 * math.sqrt(2 / N_DRAWS)


@pytest.mark.parametrize("m", [0.5, 1.0, 2.0, 4.5])
def test_nakagami_power_has_mean_one_and_variance_one_over_m(m):
    h = draw_fading_power(np.random.default_rng(11), "nakagami-m", nakagami_m=m, size=N_DRAWS)
    assert h.shape == (N_DRAWS,) and h.min() >= 0.0
    assert h.mean() == pytest.approx(1.0, rel=0.01)
    assert h.var() == pytest.approx(1.0 / m, rel=0.04)


def test_nakagami_with_m_one_is_rayleigh_in_distribution():
    nakagami = draw_fading_power(np.random.default_rng(12), "nakagami-m", nakagami_m=1.0, size=N_DRAWS)
    rayleigh = draw_fading_power(np.random.default_rng(13), "rayleigh", size=N_DRAWS)
    assert _ks_distance(nakagami, rayleigh) < KS_CRITICAL
    # The test tells distributions apart: m = 2 is far from Rayleigh.
    milder = draw_fading_power(np.random.default_rng(12), "nakagami-m", nakagami_m=2.0, size=N_DRAWS)
    assert _ks_distance(milder, rayleigh) > 10 * KS_CRITICAL


def test_nakagami_m_is_checked():
    with pytest.raises(ValueError, match="nakagami_m must be a finite number >= 0.5"):
        draw_fading_power(np.random.default_rng(), "nakagami-m", nakagami_m=0.3)
    with pytest.raises(ValueError, match="nakagami_m"):
        with_overrides("lte-cell-edge", fading="nakagami-m", nakagami_m=0.2)


def test_a_profile_hands_its_nakagami_m_to_the_model():
    profile = with_overrides("lte-cell-edge", fading="nakagami-m", nakagami_m=3.0)
    fades = [transmit(client_rng(0, 0, r, "down"), profile, 100, "down").fading_power for r in range(1, 4001)]
    assert np.var(fades) == pytest.approx(1 / 3.0, rel=0.1)
    expected = float(draw_fading_power(client_rng(0, 0, 1, "down"), "nakagami-m", nakagami_m=3.0))
    assert fades[0] == expected


def test_the_registry_lists_the_built_in_models_and_fading_kinds_is_a_view_of_it():
    assert list(FADING_MODELS)[:4] == ["rayleigh", "rician", "none", "nakagami-m"]
    assert tuple(FADING_KINDS) == tuple(FADING_MODELS)
    assert list(ERROR_MODELS_BY_NAME)[:2] == ["outage", "bler"]


def test_an_unknown_fading_name_lists_the_allowed_ones():
    with pytest.raises(ValueError) as err:
        fading_model("weibull")
    message = str(err.value)
    assert "'weibull'" in message
    assert all(name in message for name in FADING_MODELS) and "package.module:function" in message
    with pytest.raises(ValueError, match="LinkProfile.fading.*rayleigh, rician, none, nakagami-m"):
        with_overrides("wifi", fading="weibull")


def test_a_name_is_registered_once():
    @register_fading("test-half")
    def half(rng, size=None):
        return 0.5 if size is None else np.full(size, 0.5)

    try:
        register_fading("test-half")(half)  # the same function again: a module imported twice

        def other(rng, size=None):
            return 1.0

        with pytest.raises(ValueError, match="'test-half' is already registered"):
            register_fading("test-half")(other)
        with pytest.raises(ValueError, match="without ':'"):
            register_fading("a:b")
    finally:
        FADING_MODELS.pop("test-half")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write a module of one's own to a file and make it importable, as a run would."""
    names = []

    def write(name, source):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    monkeypatch.syspath_prepend(str(tmp_path))
    yield write
    for name in names:
        sys.modules.pop(name, None)


def test_a_fading_model_of_ones_own_is_drawn_by_path_and_by_the_name_it_registers(user_module):
    user_module("user_fading", """
        import numpy as np
        from pfl_app.wireless.fading import register_fading


        @register_fading("test-distance-shadow")
        def shadow(rng, size=None, *, distance_m, spread_db=0.0):
            # Deterministic in the distance, so the test can tell it was called with the profile's.
            gain = 100.0 / distance_m
            return gain if size is None else np.full(size, gain)
    """)
    try:
        profile = with_overrides("wifi", fading="user_fading:shadow", distance_m=25.0)
        sent = transmit(client_rng(0, 1, 1, "up"), profile, 3000, "up")
        assert sent.fading_power == 4.0
        # Importing the module registered it by name as well.
        by_name = with_overrides("wifi", fading="test-distance-shadow", distance_m=50.0)
        assert transmit(client_rng(0, 1, 1, "up"), by_name, 3000, "up").fading_power == 2.0
        assert "test-distance-shadow" in FADING_KINDS
    finally:
        FADING_MODELS.pop("test-distance-shadow", None)


def test_a_fading_path_that_does_not_lead_to_a_model_says_why(user_module):
    user_module("user_not_fading", """
        NOT_A_FUNCTION = 3
        def needs_gamma(rng, size=None, *, gamma):
            return 1.0
    """)
    with pytest.raises(ValueError, match="annot import 'no_such_module'"):
        with_overrides("wifi", fading="no_such_module:fade")
    with pytest.raises(ValueError, match="has no .*'missing'"):
        with_overrides("wifi", fading="user_not_fading:missing")
    with pytest.raises(ValueError, match="not a function"):
        with_overrides("wifi", fading="user_not_fading:NOT_A_FUNCTION")
    # A required parameter must be a LinkProfile field, which fills it.
    with pytest.raises(ValueError, match="requires parameter.*gamma"):
        with_overrides("wifi", fading="user_not_fading:needs_gamma")


def test_a_packet_error_model_of_ones_own_decides_which_packets_fail(user_module):
    user_module("user_errors", """
        import numpy as np
        from pfl_app.wireless.packet_errors import register_error_model


        @register_error_model("test-always")
        def always(snr_db):
            return np.ones_like(np.asarray(snr_db, dtype=float))[()]
    """)
    try:
        profile = with_overrides("wifi", error_model="user_errors:always", max_retransmissions=2)
        sent = transmit(client_rng(0, 0, 1, "up"), profile, 4000, "up")
        assert not sent.delivered and sent.lost_packets == tuple(range(sent.packets))
        assert sent.transmissions == 3 * sent.packets
        assert LinkProfile(name="x", distance_m=1.0, path_loss_exponent=2.0, reference_loss_db=40.0,
                           error_model="test-always").error_model == "test-always"
    finally:
        ERROR_MODELS_BY_NAME.pop("test-always", None)
    with pytest.raises(ValueError, match="LinkProfile.error_model.*outage, bler"):
        with_overrides("wifi", error_model="test-always")


def test_the_run_config_reads_the_registry_when_it_checks_wireless_fading():
    from pfl_app.config import ConfigError, parse_run_config

    allowed = "allowed values: '', rayleigh, rician, none, nakagami-m, or package.module:name"
    with pytest.raises(ConfigError, match=allowed):
        parse_run_config({"wireless.fading": "test-late"})
    register_fading("test-late")(lambda rng, size=None: 1.0)
    try:
        assert parse_run_config({"wireless.fading": "test-late"}).wireless.fading == "test-late"
        path = "pfl_app.wireless.fading:rayleigh"  # a function by its path: imported when the config is checked
        assert parse_run_config({"wireless.fading": path}).wireless.fading == path
        with pytest.raises(ConfigError, match="'wireless.fading' = 'my_pkg.fading:late'.*annot import 'my_pkg.fading'"):
            parse_run_config({"wireless.fading": "my_pkg.fading:late"})
    finally:
        FADING_MODELS.pop("test-late")
