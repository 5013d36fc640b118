"""`stochgrad train gating` on small data: every gater trains, keeps 10% of its gates open, reports an error."""
import json

import pytest
import torch

from stochgrad.cli import main
from stochgrad.studies.gating import GATERS, GatingNet


@pytest.mark.parametrize("gater", GATERS)
def test_every_gater_trains_and_reports(tmp_path, gater):
    assert main(["train", "gating", "--dataset", "digits", "--gater", gater, "--steps", "150", "--log-every", "50",
                 "--out", str(tmp_path), "--quiet"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0 <= summary["test_error_percent"] < 90     # better than chance (90%) after 150 steps
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4 and (tmp_path / "curves.png").exists()


def test_test_time_gates_leave_the_target_fraction_open():
    torch.manual_seed(0)
    net = GatingNet(64, "straight_through", gates=50, hidden=20).eval()
    x, y = torch.rand(200, 64), torch.randint(0, 10, (200,))
    _, threshold = net.test_error(x, y, 0.1)
    assert (net.pre_activation(x) > threshold).float().mean().item() == pytest.approx(0.1, abs=1e-3)


def test_unknown_gater_lists_the_valid_ones(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "gating", "--gater", "nope", "--out", str(tmp_path), "--quiet"])
    assert "valid: noisy_rectifier, straight_through" in capsys.readouterr().err
