"""Semantic hashing beats random projections; a delayed broadcast reward still teaches the multiplexer."""
import json

import pytest
import torch
from torch import nn

import stochgrad as sg
from stochgrad.cli import main
from stochgrad.studies.hashing import hamming, retrieval


def test_hamming_and_retrieval_on_a_known_case():
    q = torch.tensor([[0.0, 0, 0, 0]])
    db = torch.tensor([[0.0, 0, 0, 1], [1.0, 1, 1, 1], [0.0, 0, 1, 1]])
    assert hamming(q, db).tolist() == [[1, 4, 2]]
    r = retrieval(q, torch.tensor([0]), db, torch.tensor([0, 0, 1]))
    assert r["precision_at_radius_2"] == pytest.approx(0.5)                # items 0 and 2 within radius 2
    assert r["mean_average_precision"] == pytest.approx((1 + 2 / 3) / 2)  # ranking 0, 2, 1: relevant at 1 and 3


@pytest.mark.parametrize("estimator", ["straight_through", "reinforce_optimal"])
def test_learned_codes_beat_random_projections(tmp_path, estimator):
    assert main(["train", "hashing", "--dataset", "digits", "--bits", "16", "--steps", "400", "--estimator", estimator,
                 "--out", str(tmp_path), "--quiet"]) == 0
    r = json.loads((tmp_path / "summary.json").read_text())["retrieval"]
    assert r["learned"]["mean_average_precision"] > r["random_sign"]["mean_average_precision"] + 0.1


@pytest.mark.parametrize("delay", [0, 4])
def test_delayed_reward_reaches_the_optimal_policy(tmp_path, delay):
    """Within 10% of the optimal reward (1.0) for the greedy policy, holding at most delay + 1 steps."""
    assert main(["train", "bandit", "--estimator", "reinforce_optimal", "--delay", str(delay), "--steps", "4000",
                 "--out", str(tmp_path), "--quiet"]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["greedy_reward"] >= 0.9
    assert s["max_held_steps"] == delay + 1


def test_delayed_broadcast_holds_at_most_delay_plus_one_steps():
    layer = nn.Sequential(nn.Linear(3, 4), sg.StochasticBinary("reinforce"))
    delayed = sg.DelayedBroadcast(delay=2)
    for _ in range(3):
        with delayed.step():
            layer(torch.randn(5, 3))
    with pytest.raises(RuntimeError, match="deliver the oldest"):
        with delayed.step():
            layer(torch.randn(5, 3))
    delayed.deliver(torch.ones(5))
    assert len(delayed) == 2 and layer[0].weight.grad is not None
    with pytest.raises(ValueError, match="delay"):
        sg.DelayedBroadcast(-1)
