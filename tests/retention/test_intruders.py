"""Retention method `intruders` on a tiny random Llama: PEFT's intruder-dimension reduction as a post-training
variant. The reduced state against computations without it (the adapter as trained at lambda 1, intruders found
by the paper's rule by hand, the saved adapter in plain PEFT), the variants' folders, fields and checks, the
gate's tie-break, and an experiment that evaluates, judges and exports every (checkpoint, variant) with `scale`
beside it."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from keeptune.core import gate
from keeptune.core.errors import ConfigError
from keeptune.experiment.config import ExperimentConfig
from keeptune.model.adapter import write_adapter
from keeptune.model.lora import apply_lora
from keeptune.retention import intruders
from keeptune.retention.variants import Variant, check, entry_folder, variants
from keeptune.train.config import RetentionConfig, load_config
from tests.retention.test_scale import SETTINGS, logits, plain_then_with, randomised, write_checkpoint
from tests.tiny import save_tiny
from tests.train.conftest import one_thread  # noqa: F401  (autouse: one torch thread here too)


def fresh(directory):
    return AutoModelForCausalLM.from_pretrained(directory).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model's directory and a PEFT model on it with random B matrices, large enough that W + dW has
    intruder dimensions."""
    directory = save_tiny(tmp_path_factory.mktemp("tiny") / "model")
    return directory, randomised(apply_lora(fresh(directory), SETTINGS))


def layers_with_intruders(peft_model, top_k: int, epsilon: float) -> int:
    """The paper's rule, computed here: a layer has intruders when one of the top_k left singular vectors of
    W + dW has |cosine| below epsilon with every left singular vector of W."""
    found = 0
    for module in peft_model.modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            weight = module.get_base_layer().weight.detach()
            delta = module.scaling["default"] * module.lora_B["default"].weight @ module.lora_A["default"].weight
            base_u = torch.linalg.svd(weight, full_matrices=False)[0]
            merged_u = torch.linalg.svd(weight + delta.detach(), full_matrices=False)[0]
            cosines = (merged_u.T @ base_u).abs().max(dim=1).values[:top_k]
            found += bool((cosines < epsilon).any())
    return found


def test_the_reduced_state_is_peft_s_and_leaves_the_adapter_as_it_was(tiny, tmp_path):
    from peft import PeftModel

    directory, peft_model = tiny
    as_trained = logits(peft_model)
    expected = layers_with_intruders(peft_model, 10, 0.5)
    assert expected > 0  # the random update brings intruders in: the test has something to remove
    with intruders.reduced(peft_model, 0.5, 10, 0.5) as layers:
        reduced = logits(peft_model)
        weights = intruders.reduced_weights(peft_model)
    assert layers == expected
    assert not torch.allclose(reduced, as_trained, atol=1e-3)
    assert torch.equal(logits(peft_model), as_trained) and list(peft_model.peft_config) == ["default"]
    # the weights saved are the state evaluated: a plain PEFT load of them computes it
    checkpoint = write_checkpoint(directory, peft_model, tmp_path / "step-000004")
    adapter = write_adapter(checkpoint, tmp_path / "intruders-0.5" / "adapter", weights, {"intruders": {"lambda": 0.5}})
    assert load_file(adapter / "adapter_model.safetensors").keys() == load_file(
        checkpoint / "adapter_model.safetensors").keys()
    assert json.loads((adapter / "keeptune.json").read_text())["intruders"] == {"lambda": 0.5}
    plain = PeftModel.from_pretrained(fresh(directory), adapter).eval()
    assert torch.allclose(logits(plain), reduced, atol=1e-5)


def test_lambda_is_the_share_kept_and_epsilon_decides_what_is_an_intruder(tiny):
    _, peft_model = tiny
    as_trained = logits(peft_model)
    with intruders.reduced(peft_model, 1.0, 10, 0.5):  # every intruder kept: the update as trained, re-factored
        assert torch.allclose(logits(peft_model), as_trained, atol=1e-5)
    assert layers_with_intruders(peft_model, 10, 1e-9) == 0
    with intruders.reduced(peft_model, 0.0, 10, 1e-9) as layers:  # nothing is an intruder: every layer copied
        assert layers == 0 and torch.equal(logits(peft_model), as_trained)
    with intruders.reduced(peft_model, 0.0, 10, 0.5):
        removed = logits(peft_model)
    with intruders.reduced(peft_model, 0.5, 10, 0.5):
        half = logits(peft_model)
    # lambda 0.5 lies between: further from as trained than nothing removed, closer than everything removed
    assert 0 < (half - as_trained).norm() < (removed - as_trained).norm()


def test_a_mica_adapter_is_reduced_and_restored_too(tiny):
    """On a MiCA model PEFT's new adapter is made with MiCA's initialisation first (a decomposition, B frozen):
    the reduction still replaces its weights, and deleting it leaves the trained MiCA adapter as it was."""
    import dataclasses

    directory, _ = tiny
    peft_model = randomised(apply_lora(fresh(directory), dataclasses.replace(SETTINGS, init="mica")), "lora_A", 2, 2)
    as_trained, frozen = logits(peft_model), [n for n, p in peft_model.named_parameters() if not p.requires_grad]
    with intruders.reduced(peft_model, 1.0, 10, 0.5):
        assert torch.allclose(logits(peft_model), as_trained, atol=1e-5)
    with intruders.reduced(peft_model, 0.0, 10, 0.5) as layers:
        assert layers == layers_with_intruders(peft_model, 10, 0.5) > 0
        assert not torch.allclose(logits(peft_model), as_trained, atol=1e-4)
    assert torch.equal(logits(peft_model), as_trained) and list(peft_model.peft_config) == ["default"]
    assert [n for n, p in peft_model.named_parameters() if not p.requires_grad] == frozen


def test_variants_folders_fields_and_methods():
    retention = RetentionConfig(methods=("kl", "scale", "intruders"), scales=(0.5,), intruder_lambdas=(0.5, 1, 0, 0.5),
                                intruder_top_k=4, intruder_epsilon=0.25)
    states = variants(retention)
    assert [(v.method, v.value) for v in states] == [(None, 1.0), ("scale", 0.5), ("intruders", 0.5),
                                                      ("intruders", 0.0)]  # 1 and repeats once
    assert [v.folder for v in states] == [None, "scale-0.5", "intruders-0.5", "intruders-0.0"]
    assert [v.fields() for v in states] == [{"scale": 1.0}, {"scale": 0.5}, {"scale": 1.0, "intruders": 0.5},
                                            {"scale": 1.0, "intruders": 0.0}]
    assert [v.methods(retention.methods) for v in states] == [["kl"], ["kl", "scale"], ["kl", "intruders"],
                                                              ["kl", "intruders"]]
    # the cache keys of as trained and scale are the plain run's and scale's as they were; intruders' hold every setting
    assert [v.state() for v in states] == ["", " scale 0.5", " intruders lambda 0.5 top_k 4 epsilon 0.25",
                                           " intruders lambda 0.0 top_k 4 epsilon 0.25"]
    assert [v.phase() for v in states] == ["", " scale 0.5", " intruders 0.5", " intruders 0"]
    assert [entry_folder(v.fields()) for v in states] == [v.folder for v in states]
    assert variants(RetentionConfig(methods=("kl",), intruder_lambdas=(0.5,))) == [Variant()]  # lambdas need the switch


def test_intruders_refuses_corda_bad_settings_and_task_names_like_its_folders():
    check(RetentionConfig(methods=("kl",)), ["intruders-0.5", "adapter"])  # off: nothing to refuse
    with pytest.raises(ConfigError, match="task name 'intruders-0.5'"):
        check(RetentionConfig(methods=("intruders",)), ["intruders-0.5", "math-worked"])
    with pytest.raises(ConfigError, match="task name 'adapter'"):
        check(RetentionConfig(methods=("intruders",)), ["adapter"])
    with pytest.raises(ConfigError, match="intruders does not combine with corda"):
        load_config(None, ["retention.methods=[intruders,corda]"])
    for word, message in [("retention.intruder_lambdas=[0.5,1.5]", "each must be in \\[0, 1\\]"),
                          ("retention.intruder_top_k=0", "must be at least 1"),
                          ("retention.intruder_epsilon=0", "must be in \\(0, 1\\]")]:
        with pytest.raises(ConfigError, match=f"override '{re.escape(word)}'.*{message}"):
            load_config(None, [word])


def test_on_equal_scores_the_state_closest_to_as_trained_wins():
    def entry(step, score, **fields):
        return {"step": step, "score": score, "passes_gate": True, **fields}

    trained, kept, removed = entry(4, 0.5, scale=1.0), entry(4, 0.5, scale=1.0, intruders=0.75), \
        entry(4, 0.5, scale=1.0, intruders=0.0)
    assert gate.ranked([removed, kept, trained]) == [trained, kept, removed]
    better = entry(2, 0.6, scale=1.0, intruders=0.0)  # a reduced state wins when it is strictly better
    assert gate.best([trained, kept, better]) is better and gate.runner_up([trained, kept, better]) is trained


# --- end to end --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reduced_run(tmp_path_factory):
    """The tiny experiment twice in one folder: plain LoRA, then with retention.methods=[scale,intruders] (scale
    0, the base model, which passes; lambdas 0.5 and 0, epsilon 0.9 so that the few steps' update has intruders);
    gate 1.0 on a SQuAD file the base model answers perfectly."""
    tmp = tmp_path_factory.mktemp("reduced")
    plain, reduced = plain_then_with(tmp, "retention.methods=[scale,intruders]", "retention.scales=[0]",
                                     "retention.intruder_lambdas=[0.5,0]", "retention.intruder_epsilon=0.9")
    return tmp, plain, reduced


def test_every_checkpoint_and_variant_is_an_entry_in_its_own_folder(reduced_run):
    tmp, plain, results = reduced_run
    run = tmp / "run"
    assert [(e["step"], e["scale"], e.get("intruders"), e["methods"]) for e in results["checkpoints"]] == [
        (s, *v) for s in (2, 4) for v in [(1.0, None, []), (0.0, None, ["scale"]), (1.0, 0.5, ["intruders"]),
                                          (1.0, 0.0, ["intruders"])]]
    assert [e for e in results["checkpoints"] if e["methods"] == []] == plain["checkpoints"]  # as the plain run's
    reduced = [e for e in results["checkpoints"] if "intruders" in e]
    assert any(e["intruder_layers"] > 0 for e in reduced)  # the reduction removed something
    for entry in reduced:
        folder = run / "checkpoints" / f"step-{entry['step']:06d}" / f"intruders-{entry['intruders']!r}"
        assert entry["adapter"] == str(folder / "adapter")
        info = json.loads((folder / "adapter" / "keeptune.json").read_text())
        assert info["intruders"] == {"lambda": entry["intruders"], "top_k": 10, "epsilon": 0.9,
                                     "layers_with_intruders": entry["intruder_layers"],
                                     "from": str(run / "train" / "checkpoints" / f"step-{entry['step']:06d}")}
        for task in ("squad-seed", "math-worked"):
            metrics = json.loads((folder / task / "metrics.json").read_text())
            assert metrics["scores"] == entry["tasks"][task]["scores"]
        trained = load_file(run / "train" / "checkpoints" / f"step-{entry['step']:06d}" / "adapter_model.safetensors")
        saved = load_file(folder / "adapter" / "adapter_model.safetensors")
        assert saved.keys() == trained.keys()
        assert (entry["intruder_layers"] > 0) == any(not torch.equal(saved[k], trained[k]) for k in saved)
    phases = [r["phase"] for r in results["timing"] if r["phase"].startswith("checkpoint 4")]
    assert phases == [p for p in ("checkpoint 4", "checkpoint 4 scale 0", "checkpoint 4 intruders 0.5",
                                  "checkpoint 4 intruders 0") for _ in range(2)]


def test_a_reduced_evaluation_is_the_saved_adapter_s(reduced_run):
    """`keeptune eval` of a reduced state's saved adapter, on its own, predicts what the run evaluated."""
    from keeptune.cli import main

    tmp, _, results = reduced_run
    entry = next(e for e in results["checkpoints"] if e.get("intruders") == 0.0 and e["intruder_layers"] > 0)
    folder = tmp / "run" / "checkpoints" / f"step-{entry['step']:06d}" / "intruders-0.0"
    squad = tmp / "squad.json"
    assert main(["eval", "squad", "--model", str(tmp / "tiny"), "--adapter", entry["adapter"], "--data", str(squad),
                 "--out", str(tmp / "again")]) == 0

    def predictions(path):
        return [r["prediction"] for r in map(json.loads, open(path / "predictions.jsonl"))]
    assert predictions(tmp / "again") == predictions(folder / "squad-seed")


def test_the_best_state_is_exported_as_evaluated(reduced_run):
    from keeptune.experiment.runner import export_best

    tmp, _, results = reduced_run
    run, best = tmp / "run", results["best"]
    passing = [e for e in results["checkpoints"] if e["passes_gate"]]
    chosen = max(passing, key=lambda e: (e["score"], e["scale"], e.get("intruders", 1.0), e["step"]))
    assert (best["step"], best["scale"], best.get("intruders")) == (chosen["step"], chosen["scale"],
                                                                    chosen.get("intruders"))
    exported = load_file(run / "best" / "adapter" / "adapter_model.safetensors")
    if "intruders" in best:  # the reduced adapter as evaluated
        assert (run / "best" / "adapter" / "adapter_model.safetensors").read_bytes() == \
            (Path(best["adapter"]) / "adapter_model.safetensors").read_bytes()
    else:  # a scaled or as-trained state: its checkpoint, the scale folded into B
        trained = load_file(Path(best["adapter"]) / "adapter_model.safetensors")
        assert all(torch.equal(v, trained[k] * best["scale"] if ".lora_B." in k else trained[k])
                   for k, v in exported.items())
    reduced = next(e for e in results["checkpoints"] if e.get("intruders") == 0.0 and e["intruder_layers"] > 0)
    config = load_config(None, [], root=ExperimentConfig)
    exported = export_best(config, tmp / "export", [{**reduced, "passes_gate": True, "score": 1.0}])
    target = tmp / "export" / "best" / "adapter"
    assert exported["adapter"] == str(target)
    assert (target / "adapter_model.safetensors").read_bytes() == \
        (run / "checkpoints" / f"step-{reduced['step']:06d}" / "intruders-0.0" / "adapter" /
         "adapter_model.safetensors").read_bytes()
    assert json.loads((target / "keeptune.json").read_text())["intruders"]["lambda"] == 0.0
