"""The link term `tx`: escalated inputs pay the bytes they send (the input as float32) and receive
(System 2's logits as float32) at the profile's energy per byte, in evaluation and in serving alike."""

import json
import shutil
import socket

import pytest
import torch

import fastslow
from fastslow.energy import escalation_bytes, load_profile
from fastslow.errors import ProfileError

# The shipped BLE profile: nRF52832 at 3 V, 1 Mb/s: 7.1 mA sending, 6.5 mA receiving.
TX_PJ, RX_PJ = 3.0 * 7.1e-3 * 8 / 1e6 * 1e12, 3.0 * 6.5e-3 * 8 / 1e6 * 1e12
# The tiny fit's digits: 1×8×8 inputs, 10 classes.
DIGITS_TX_UJ = (4 * 64 * TX_PJ + 4 * 10 * RX_PJ) / 1e6
STRATEGY = "router@share=0.4"


def test_bytes_and_the_shipped_radio_figures():
    assert escalation_bytes((1, 8, 8), 10) == (256, 40)
    assert escalation_bytes((3, 32, 32), 100) == (12288, 400)
    ble = load_profile("cmos45nm_ble")
    assert ble.has_link and ble.E_TX_BYTE_pJ == pytest.approx(TX_PJ) and ble.E_RX_BYTE_pJ == pytest.approx(RX_PJ)
    assert {"E_TX_BYTE_pJ", "E_RX_BYTE_pJ", "caveat"} <= set(ble.sources)
    assert DIGITS_TX_UJ == pytest.approx(49.8624)
    assert not load_profile("cmos45nm").has_link and "E_TX_BYTE_pJ" not in load_profile("cmos45nm").summary()


def test_a_link_needs_both_figures(tmp_path):
    half = tmp_path / "half.toml"
    base = 'name = "half"\nE_MAC_pJ = 1.0\nE_AC_pJ = 0.1\nE_NEURON_pJ = 0.5\nweight_bits = 16\nstate_bits = 16\n'
    half.write_text(base + "E_TX_BYTE_pJ = 100.0\n")
    with pytest.raises(ProfileError, match="needs both E_TX_BYTE_pJ and E_RX_BYTE_pJ"):
        load_profile(half)
    half.write_text(base + "E_TX_BYTE_pJ = 100.0\nE_RX_BYTE_pJ = -1\n")
    with pytest.raises(ProfileError, match="malformed"):
        load_profile(half)


def _x(folder):
    from fastslow.pipeline import load_fit

    return load_fit(folder).splits.x_test


def test_serving_charges_tx_to_escalated_inputs_only(fitted_folder):
    x = _x(fitted_folder)
    plain = fastslow.load(fitted_folder).predict(x, STRATEGY)
    radio = fastslow.load(fitted_folder, profile="cmos45nm_ble").predict(x, STRATEGY)
    assert "tx" not in plain.energy_terms_uj and 0 < int(radio.escalated.sum()) < len(x)
    expected = radio.escalated.double() * DIGITS_TX_UJ
    assert torch.allclose(radio.energy_terms_uj["tx"].double(), expected, rtol=1e-6)
    for term, values in plain.energy_terms_uj.items():  # the arithmetic figures are cmos45nm's
        assert torch.equal(values, radio.energy_terms_uj[term])
    assert torch.allclose(radio.energy_uj.double(), plain.energy_uj.double() + expected, rtol=1e-6)


def test_a_degraded_input_pays_no_link(fitted_folder):
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    model = fastslow.load(fitted_folder, profile="cmos45nm_ble", s2_url=f"http://127.0.0.1:{port}", s2_retries=0)
    answer = model.predict(_x(fitted_folder), STRATEGY)
    model.remote.close()
    assert answer.degraded.any() and not answer.escalated.any()
    assert not answer.energy_terms_uj["tx"].any() and not answer.energy_terms_uj["s2"].any()


def test_evaluation_charges_tx_in_results_json(fitted_folder, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(fitted_folder, folder)  # the shared fit stays as it is
    fastslow.evaluate_folder(folder, profile="cmos45nm_ble", show_table=False)
    results = json.loads((folder / "results.json").read_text())
    assert results["profile"]["E_TX_BYTE_pJ"] == pytest.approx(TX_PJ)
    for strategy in results["strategies"]:
        tx = strategy["energy_terms_uj"]["tx"]
        assert tx == pytest.approx(strategy["escalation_rate"] * DIGITS_TX_UJ, rel=1e-5, abs=1e-9), strategy["name"]
        assert strategy["energy_uj"] == pytest.approx(sum(strategy["energy_terms_uj"].values()), rel=1e-6)
    by_name = {s["name"]: s for s in results["strategies"]}
    assert by_name["system1"]["energy_terms_uj"]["tx"] == 0 and by_name["system2"]["energy_terms_uj"]["tx"] > 0
    assert "tx µJ" in (folder / "report.md").read_text()
