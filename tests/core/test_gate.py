"""The gate and the score, the one place the experiment, the tracker and results take them from."""
from __future__ import annotations

import pytest

from keeptune.core.gate import TaskGate, best, judge, lowest_retention, score

SEED = TaskGate("squad-seed", ("emf1.F1", "emf1.Em"), 0.9)
CHAT = TaskGate("squad-chat", ("squad_v1.f1",), 0.8)
BASE = {"squad-seed": {"emf1.F1": 60.0, "emf1.Em": 40.0}, "squad-chat": {"squad_v1.f1": 50.0}}


@pytest.mark.parametrize("f1,em,chat,seed_ok,chat_ok", [
    (54.0, 36.0, 40.0, True, True),     # exactly 0.9 x and 0.8 x: passes
    (53.9, 36.0, 40.0, False, True),    # F1 just below 54.0
    (60.0, 35.9, 40.0, False, True),    # EM below 36.0: F1 AND EM, as the seed
    (60.0, 40.0, 39.9, True, False),    # the second task alone fails the gate
])
def test_every_retention_task_must_pass(f1, em, chat, seed_ok, chat_ok):
    scores = {"squad-seed": {"emf1.F1": f1, "emf1.Em": em}, "squad-chat": {"squad_v1.f1": chat}}
    verdict = judge([SEED, CHAT], scores, BASE)
    assert verdict["gate"] == {"squad-seed": seed_ok, "squad-chat": chat_ok}
    assert verdict["passes_gate"] == (seed_ok and chat_ok)
    assert verdict["retention"]["squad-seed"] == {"emf1.F1": f1 / 60.0, "emf1.Em": em / 40.0}


def test_a_zero_baseline_has_no_retention_and_any_score_passes():
    verdict = judge([SEED], {"squad-seed": {"emf1.F1": 1.0, "emf1.Em": 0.0}},
                    {"squad-seed": {"emf1.F1": 13.84, "emf1.Em": 0.0}})
    assert verdict["passes_gate"] is False  # F1 1.0 < 0.9 x 13.84
    verdict = judge([SEED], {"squad-seed": {"emf1.F1": 13.0, "emf1.Em": 0.0}},
                    {"squad-seed": {"emf1.F1": 13.84, "emf1.Em": 0.0}})
    assert verdict["passes_gate"] is True and verdict["retention"]["squad-seed"]["emf1.Em"] is None
    assert SEED.thresholds({"emf1.F1": 13.84, "emf1.Em": 0.0}) == {"emf1.F1": pytest.approx(12.456), "emf1.Em": 0.0}


def test_score_and_best():
    # SPEC section 4's leaderboard row: accuracy 64.00%, ratio 0.000424393 -> 0.747873 (rounded).
    assert round(score(0.64, 0.000424393), 6) == 0.747873
    entries = [{"step": 1, "passes_gate": True, "score": 0.5}, {"step": 2, "passes_gate": False, "score": None},
               {"step": 3, "passes_gate": True, "score": 0.5}, {"step": 4, "passes_gate": True, "score": 0.4}]
    assert best(entries)["step"] == 3  # the later of two equal scores
    assert best([e for e in entries if not e["passes_gate"]]) is None


def state(step, scale, passes, score):
    return {"step": step, "scale": scale, "passes_gate": passes, "score": score if passes else None}


def test_best_over_checkpoint_and_scale_pairs():
    # only the scaled state passes: it is chosen
    entries = [state(2, 1.0, False, None), state(2, 0.5, True, 0.41), state(4, 1.0, False, None),
               state(4, 0.75, False, None)]
    assert (best(entries)["step"], best(entries)["scale"]) == (2, 0.5)
    # the unscaled state passes with the higher score: it is chosen over the scaled one that passes too
    entries = [state(2, 1.0, True, 0.52), state(2, 0.5, True, 0.47), state(4, 0.5, True, 0.51)]
    assert (best(entries)["step"], best(entries)["scale"]) == (2, 1.0)
    # the scaled one scores higher: it wins
    entries[1]["score"] = 0.53
    assert (best(entries)["step"], best(entries)["scale"]) == (2, 0.5)
    # equal scores: the larger scale, then the later step; an entry without a scale is at 1
    tie = [state(2, 0.5, True, 0.5), state(4, 0.75, True, 0.5), {"step": 1, "passes_gate": True, "score": 0.5},
           state(3, 0.75, True, 0.5)]
    assert best(tie)["step"] == 1
    assert (best(tie[:2] + tie[3:])["step"], best(tie[:2] + tie[3:])["scale"]) == (4, 0.75)


def test_lowest_retention_is_the_gates_closest_scalar():
    scores = {"squad-seed": {"emf1.F1": 57.0, "emf1.Em": 44.0}, "squad-chat": {"squad_v1.f1": 45.0}}
    verdict = judge([SEED, CHAT], scores, BASE)
    assert lowest_retention(verdict["retention"]) == pytest.approx(45.0 / 50.0)  # 0.95, 1.1, 0.9
    assert lowest_retention({"squad-seed": {"emf1.F1": None}}) == 1.0  # every baseline 0: nothing lost
