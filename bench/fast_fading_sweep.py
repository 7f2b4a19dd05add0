"""Do PFTT's smaller uploads lose fewer updates? The channel model alone, no training.

Sends PFTT's and send-all's real per-client message sizes of the default run (docs/benchmarks.md:
9,229,072 and 38,910,992 uplink bytes per round over 4 clients, i.e. 2,307,268 and 9,727,748
bytes per client; the train downlink carries the same shared tensors, so it is taken to be the
same size) over the ``lte-cell-edge`` link at the distances of bench/wireless_sweep.py, under
block fading (``wireless.coherence = "message"``) and fast fading (``"packet"``), through the
built-in :class:`~pfl_app.wireless.LinkChannel` on many (client, round) draws. An update is
delivered when its downlink and its uplink both are (whole-message loss, no deadline).

Beside the simulated rates it prints the closed forms for the uplink alone, with ``p(x)`` the
profile's BLER at SNR ``x``, ``h ~ Exp(1)`` (Rayleigh), ``g`` the mean SNR, ``r`` the HARQ
retransmissions and ``n`` the packets:

- block fading: ``E_h[(1 - p(g h)^(r+1))^n]``, by quadrature over ``h``;
- fast fading: ``(1 - E_h[p(g h)]^(r+1))^n``.

    python bench/fast_fading_sweep.py                     # 300, 500, 700 m; 2000 draws each
    python bench/fast_fading_sweep.py --distances 600 800 --draws 500 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pfl_app.wireless import LinkChannel, mean_snr_db, packet_error_probability, with_overrides

SIZES = {"pftt": 9_229_072 // 4, "send-all": 38_910_992 // 4}
CLIENTS = 4


def closed_forms(profile, nbytes: int) -> dict[str, float]:
    """P(uplink delivered) under block and fast Rayleigh fading, by quadrature over the fade."""
    n = -(-(nbytes + profile.overhead_bytes) // profile.packet_bytes)
    attempts = profile.max_retransmissions + 1
    h = np.concatenate([np.geomspace(1e-12, 1e-3, 20_001), np.linspace(1e-3, 60.0, 400_001)[1:]])
    density = np.exp(-h)
    per = packet_error_probability(profile, mean_snr_db(profile, "up") + 10 * np.log10(h))
    block = float(np.trapezoid((1 - per**attempts) ** n * density, h))
    p_bar = float(np.trapezoid(per * density, h))
    return {"packets": n, "p_bar": p_bar, "block": block, "packet": (1 - p_bar**attempts) ** n}


def simulate(profile, nbytes: int, coherence: str, draws: int, seed: int) -> dict[str, float]:
    """Delivery rates and mean uplink air time over ``draws`` (client, round) pairs."""
    up_ok = both_ok = 0
    air = []
    for i in range(draws):
        client, rnd = i % CLIENTS, 1 + i // CLIENTS
        channel = LinkChannel(profile, seed=seed, client_id=client, num_clients=CLIENTS, coherence=coherence)
        down = channel.downlink(rnd, nbytes)
        up = channel.uplink(rnd, nbytes)  # sent even after a lost downlink, to count the uplink alone
        up_ok += up.delivered
        both_ok += down.delivered and up.delivered
        air.append(up.air_time_s)
    return {"uplink_delivered": up_ok / draws, "update_delivered": both_ok / draws, "uplink_air_s": float(np.mean(air))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--distances", type=float, nargs="+", default=[300.0, 500.0, 700.0])
    p.add_argument("--draws", type=int, default=2000, help="(client, round) pairs per cell of the table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()

    start = time.time()
    rows = []
    print("| distance (m) | method | packets | fading | uplink delivered (sim) | uplink (closed form) "
          "| update delivered (sim) | mean uplink air time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for distance in args.distances:
        profile = with_overrides("lte-cell-edge", distance_m=distance)
        for method, nbytes in SIZES.items():
            forms = closed_forms(profile, nbytes)
            for coherence in ("message", "packet"):
                sim = simulate(profile, nbytes, coherence, args.draws, args.seed)
                form = forms["block" if coherence == "message" else "packet"]
                row = {"distance_m": distance, "method": method, "bytes": nbytes, "coherence": coherence,
                       "packets": forms["packets"], "closed_form_uplink": form, "p_bar": forms["p_bar"], **sim}
                rows.append(row)
                print(f"| {distance:g} | {method} | {forms['packets']:,} | {coherence} | "
                      f"{sim['uplink_delivered']:.3f} | {form:.3f} | {sim['update_delivered']:.3f} | "
                      f"{sim['uplink_air_s']:.2f} |", flush=True)
    print(f"\n{args.draws} draws per row, seed {args.seed}; {time.time() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
