#!/usr/bin/env bash
# Reproductions of issue 28 (the 19 findings of the second hostile-input audit and its 3 "not yet probed"
# items), typed as a user would, against a clone of keeptune whose .venv exists:
#
#     bash scripts/audit-issue28.sh CLONE_DIR          (REPRO_JOBS=1 runs one probe at a time; default 2)
#
# Everything runs in a fresh scratch folder /tmp/repro28.XXXXXX on a tiny random Llama (tests/tiny.py), never the
# embedded 135M model except for the read-only cache probe, which must be refused before that model is read.
# Per probe: [id] finding and title; the command ($S the scratch folder, $K the clone); exit code, seconds, the
# exit code wanted, the flag (TRACEBACK: a traceback anywhere in the output; HANG: over the timeout; else OK for
# exit 0, ERROR(rc) otherwise) and whether the exit code is the one wanted; the last line of the output. `check:`
# lines follow where the output alone does not show the result (a run folder, a live link, a sweep's trials).
set -u
K=$(cd "${1:?usage: bash scripts/audit-issue28.sh CLONE_DIR}" && pwd)
KT=$K/.venv/bin/keeptune
PY=$K/.venv/bin/python
[ -x "$KT" ] && [ -x "$PY" ] || { echo "no $KT or $PY: make the clone's .venv first" >&2; exit 1; }
S=$(mktemp -d /tmp/repro28.XXXXXX)
LIMIT=60
JOBS=${REPRO_JOBS:-2}
export KEEPTUNE_CACHE=$S/cache OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$S/logs" "$S/out" "$S/cache"
cd "$S" || exit 1
START=$SECONDS
ORDER=()
declare -A AFTER=()

short() { local t="$*"; t=${t//$K\/.venv\/bin\/keeptune/keeptune}; t=${t//$S/\$S}; echo "${t//$K/\$K}"; }

last_line() {  # the last non-blank line, a progress bar's carriage returns read as line ends
    tr '\r' '\n' <"$1" | grep -v '^[[:space:]]*$' | tail -n 1 | cut -c1-400
}

flag() {  # flag LOG RC
    if grep -q "Traceback" "$1"; then echo TRACEBACK
    elif [ "$2" = 124 ] || [ "$2" = 137 ]; then echo HANG
    elif [ "$2" = 0 ]; then echo OK
    else echo "ERROR($2)"; fi
}

report() {  # report ID TITLE WANT LOG RC SECONDS SHOWN-COMMAND
    local f verdict="as wanted"
    f=$(flag "$4" "$5")
    { [ "$5" != "$3" ] || [ "$f" = TRACEBACK ]; } && verdict="NOT AS WANTED"
    case $3 in  # a refusal ends in one `keeptune: error:` line, an interruption in one `keeptune: interrupted:` line
        2) last_line "$4" | grep -q '^keeptune: error: ' || verdict="NOT AS WANTED (no keeptune: error: line last)" ;;
        130) last_line "$4" | grep -q '^keeptune: interrupted: ' || verdict="NOT AS WANTED (no keeptune: interrupted: line last)" ;;
    esac
    printf '\n[%s] %s\n' "$1" "$2"
    printf '    $ %s\n' "$(short "$7")"
    printf '    exit %s in %ss (want %s): %s, %s\n' "$5" "$6" "$3" "$f" "$verdict"
    printf '    last: %s\n' "$(short "$(last_line "$4")")"
}

check() { printf '    check: %s\n' "$(short "$*")"; }

exists() { if [ -e "$1" ]; then echo "$(short "$1") EXISTS (wrong: it should not)"; else echo "$(short "$1") absent (right)"; fi; }

run_one() {  # run_one ID TITLE WANT COMMAND...: COMMAND in $S under `timeout $LIMIT`, its report in out/ID
    local id=$1 title=$2 want=$3; shift 3
    local log=$S/logs/$id.log t0=$SECONDS rc
    timeout -k 5 "$LIMIT" "$@" >"$log" 2>&1 </dev/null
    rc=$?
    report "$id" "$title" "$want" "$log" "$rc" $((SECONDS - t0)) "$*" >"$S/out/$id"
}

probe() {  # probe ID TITLE WANT COMMAND...: started in the background, at most $JOBS at once
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    ORDER+=("$1")
    run_one "$@" &
}

after() { AFTER[$1]=$2; }  # after ID CODE: CODE runs once ID's probe is done (at flush), printing check lines

flush() {  # wait for the probes started, then print their reports (and their checks) in order
    wait
    local id
    for id in "${ORDER[@]}"; do
        cat "$S/out/$id"
        [ -n "${AFTER[$id]:-}" ] && eval "${AFTER[$id]}"
    done
    ORDER=()
}

interrupt() {  # interrupt ID TITLE WHEN COMMAND...: SIGINT once the shell test WHEN holds; in the foreground
    local id=$1 title=$2 when=$3; shift 3
    local log=$S/logs/$id.log t0=$SECONDS rc pid n=0
    set -m  # a job of its own: a background job of a script without job control would ignore SIGINT
    "$@" >"$log" 2>&1 </dev/null &
    pid=$!
    set +m
    while [ $n -lt $((LIMIT * 20)) ] && kill -0 "$pid" 2>/dev/null && ! eval "$when"; do
        sleep 0.05; n=$((n + 1))
    done
    kill -INT "$pid" 2>/dev/null
    n=0
    while [ $n -lt $((LIMIT * 10)) ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; n=$((n + 1)); done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; wait "$pid" 2>/dev/null; rc=137
    else wait "$pid"; rc=$?; fi
    report "$id" "$title" 130 "$log" "$rc" $((SECONDS - t0)) "$* (SIGINT once $(short "$when"))"
}

links() {  # links FILE...: live javascript:/data:/vbscript: links, the Markdown rendered as a trusting previewer would
    "$PY" - "$@" <<'EOF' 2>&1 | while read -r l; do check "$l"; done
import re, sys
from pathlib import Path
bad = re.compile(r"""(href|src)\s*=\s*["']?\s*(javascript|vbscript|data:text)""", re.I)
for name in sys.argv[1:]:
    path = Path(name)
    if not path.is_file():
        print(f"{name}: missing"); continue
    page = path.read_text(encoding="utf-8")
    how, pattern = "as written", bad
    if path.suffix == ".md":
        try:
            import markdown_it
        except ImportError:  # no renderer: an unescaped ](javascript: or <javascript: is a live link
            pattern, how = re.compile(r"(?<!\\)\]\(\s*(javascript|vbscript|data):|<(javascript|vbscript|data):", re.I), "grep"
        else:
            renderer = markdown_it.MarkdownIt("commonmark").enable("table")
            renderer.validateLink = lambda url: True
            page, how = renderer.render(page), "rendered by markdown-it, every address trusted"
    found = pattern.findall(page)
    shown = re.search(r".{0,12}javascript:.{0,14}", path.read_text(encoding="utf-8"))
    print(f"{name} ({how}): {len(found)} live links" + (" (WRONG)" if found else " (right)")
          + (f"; the text reads {shown.group(0)!r}" if shown else "; no 'javascript:' in it"))
EOF
}

echo "issue 28 reproductions: clone $K ($(git -C "$K" log -1 --format='%h %s' 2>/dev/null | cut -c1-80))"
echo "scratch \$S=$S, KEEPTUNE_CACHE=\$S/cache, timeout ${LIMIT}s a command, $JOBS at once"

# --- the materials: a tiny model, an adapter of it, tasks, training data, configs, a sweep -----------------------
PYTHONPATH=$K "$PY" - "$S" <<'EOF' >"$S/logs/setup.log" 2>&1 || { cat "$S/logs/setup.log"; echo "setup failed"; exit 1; }
import json, sys
from pathlib import Path

import torch
import yaml
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from keeptune.core.io import write_jsonl
from tests.tiny import save_tiny
from keeptune.data.prompts import PROMPTS

S = Path(sys.argv[1])
tiny = save_tiny(S / "tiny")
torch.manual_seed(1)  # a rank-4 adapter on q_proj, v_proj with non-zero B, keeptune.json naming its base
peft = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny),
                      LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
for name, param in peft.named_parameters():
    if "lora_B" in name:
        torch.nn.init.normal_(param, std=0.2)
peft.save_pretrained(S / "adapter")
(S / "adapter" / "keeptune.json").write_text(json.dumps({"base_model": str(tiny)}))
def conversation(i):  # as tests/train/conftest.py: 48 records, 6 steps an epoch at batch 8
    a, b = 10 + 7 * i, 3 + (i % 5) * 111
    return {"id": str(i + 1), "template": "arithmetic", "conversations": [
        {"from": "human", "value": PROMPTS["math"].format(problem=f"{a} + {b} =" + " ?" * (i % 6))},
        {"from": "gpt", "value": f"{a + b}"}]}
write_jsonl(S / "train.jsonl", [conversation(i) for i in range(48)])

QA = """name: qa
description: "questions [click](javascript:alert(1)) <b>bold</b>"
data: {path: %s}
prompt: "Q: {question}\\nA:"
reference: answer
generation: {max_new_tokens: %d}
postprocess: %s
metrics: [exact_match]
gate: [exact_match.accuracy]
accuracy: exact_match.accuracy
"""
for n in (12, 60, 400):
    (S / f"qa{n}.jsonl").write_text("".join(json.dumps({"question": f"{i} + 1?", "answer": str(i + 1)}) + "\n"
                                            for i in range(n)))
def spec(name, path="qa12.jsonl", tokens=4, post="[strip, first_line]", extra=""):
    (S / name).write_text(QA % (path, tokens, post) + extra)
spec("qa.yaml")
spec("qa60.yaml", "qa60.jsonl")
spec("qa400.yaml", "qa400.jsonl", tokens=8)
spec("regex-issue.yaml", tokens=200, post="[{regex: \"(.+)+$!\"}]")
spec("regex-backtrack.yaml", tokens=48, post="[{regex: '(?:(.)|(..))+\\p{Greek}'}]")
spec("etc-passwd.yaml", "package:/etc/passwd")
spec("dotdot.yaml", "package:../x")
spec("twice.yaml", extra="reference: question\n")

letters = "abcdefghi"  # the issue's bomb: a: .. i:, each a list of nine aliases of the one before (9 ** 9 values)
bomb = [f"a: &a [{', '.join(['x'] * 9)}]"]
bomb += [f"{n}: &{n} [{', '.join(['*' + b] * 9)}]" for b, n in zip(letters, letters[1:])]
spec("bomb-spec.yaml", extra="\n".join(bomb) + "\n")

EXPERIMENT = f"""name: tiny
model: {{source: {tiny}}}
original: [{{task: {S / 'qa.yaml'}}}]
new_task: {{n: 16, eval_n: 4, max_new_tokens: 4, seq_len: 512}}
train: {{max_steps: 4, global_batch: 4, micro_batch: 2, checkpoints: 2}}
tracking: {{every: 2, retention: 2, new_task: 2}}
batch_size: 4
lora: {{dropout: 0.0}}
"""
(S / "tiny-exp.yaml").write_text(EXPERIMENT)
(S / "bomb-exp.yaml").write_text(EXPERIMENT + "\n".join(bomb) + "\n")
(S / "twice-exp.yaml").write_text(EXPERIMENT + "batch_size: 8\n")

overrides = {"model.source": str(tiny), "original": [{"task": str(S / "qa.yaml")}], "new_task.n": 16,
             "new_task.eval_n": 4, "new_task.max_new_tokens": 4, "new_task.seq_len": 512, "train.max_steps": 4,
             "train.global_batch": 4, "train.micro_batch": 2, "train.checkpoints": 2, "tracking.every": 2,
             "tracking.retention": 2, "tracking.new_task": 2, "batch_size": 4, "lora.dropout": 0.0}
(S / "both.yaml").write_text(yaml.safe_dump({  # as tests/sweep/test_concurrent.py: 2 trials, one a start trial
    "overrides": overrides, "space": {"train.lr": {"type": "log_uniform", "low": 1e-6, "high": 1e-5}},
    "trials": 2, "out": str(S / "sweep"), "start": [{"train.lr": 2e-6}],
    "pruning": {"gate": False, "median": False}}, sort_keys=False))

squad = lambda article: json.dumps({"version": "1.1", "data": [
    {"title": "ok", "paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": "q1", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]}]}]},
    article]})
(S / "squad-noqas.json").write_text(squad({"title": "T", "paragraphs": [{"context": "c", "qas": []}]}))
(S / "squad-nopara.json").write_text(squad({"title": "T", "qas": []}))

from tests.report.synthetic import results, write_run  # a run's results.json, its task described with links
content = results()
content["tasks"][0]["description"] = ("[click](javascript:alert(1)) [d](data:text/html;base64,PHNjcmlwdD4=) "
                                      "<javascript:alert(4)> ![i](javascript:alert(2))")
write_run(S / "js-run", content)
EOF
echo "setup (tiny model, adapter, tasks, data, configs): $((SECONDS - START))s"
TINY=$S/tiny
A=$S/adapter
cp -r "$A" a-badjson && printf '{"peft_type": "LORA", ' >a-badjson/adapter_config.json
cp -r "$A" a-cut && head -c $(( $(stat -c%s "$A/adapter_model.safetensors") / 2 )) "$A/adapter_model.safetensors" \
    >a-cut/adapter_model.safetensors
cp -r "$A" a-pickle && "$PY" -c "
import torch; from safetensors.torch import load_file
torch.save(load_file('a-pickle/adapter_model.safetensors'), 'a-pickle/adapter_model.bin')" \
    && rm a-pickle/adapter_model.safetensors
mkdir -p disk-eval disk-train ro-cache
TRAIN=(model.source="$TINY" data.path="$S/train.jsonl" train.max_steps=null train.global_batch=8 train.micro_batch=2
       train.lr=1e-2)

# --- the one-shot probes, $JOBS at a time -------------------------------------------------------------------------
probe 1a "1 (material) export the tiny adapter as MindFormers" 0 "$KT" export "$A" --format mindformers --out g.ckpt

probe 2a "2 YAML alias bomb in a task spec" 2 "$KT" eval bomb-spec.yaml --model "$TINY" --out bomb-eval
probe 2b "2 YAML alias bomb in an experiment config" 2 "$KT" run bomb-exp.yaml out="$S/bomb-run"
after 2b 'check "run folder: $(exists "$S/bomb-run")"'

probe 3a "3 the issue's regex (.+)+\$! on 200-token generations (wanted: no match, at once)" 0 \
    "$KT" eval regex-issue.yaml --model "$TINY" --out regex-issue --limit 4
probe 3b "3 a really backtracking regex (?:(.)|(..))+\\p{Greek} on 48-token generations" 2 \
    "$KT" eval regex-backtrack.yaml --model "$TINY" --out regex-bt --limit 4

if unshare -rm true 2>/dev/null; then  # a tmpfs mounted in a user namespace: no root needed, gone afterwards
    probe 4a "4 full disk during eval (a 12 KiB tmpfs)" 2 unshare -rm sh -c \
        "mount -t tmpfs -o size=12k tmpfs $S/disk-eval && exec $KT eval $S/qa60.yaml --model $TINY --out $S/disk-eval/eval --batch-size 4"
    probe 4b "4 full disk during train (a 64 KiB tmpfs)" 2 unshare -rm sh -c \
        "mount -t tmpfs -o size=64k tmpfs $S/disk-train || exit 9; $KT train ${TRAIN[*]} out=$S/disk-train/run train.checkpoints=3; rc=\$?; ls -A $S/disk-train/run/checkpoints >$S/logs/4b.ls 2>&1; exit \$rc"
    after 4b 'check "left in run/checkpoints on the full disk: $(tr "\n" " " <"$S/logs/4b.ls")$(grep -q "\.tmp" "$S/logs/4b.ls" && echo "(a staging folder left behind)")"'
elif [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=12k tmpfs disk-eval 2>/dev/null; then
    umount disk-eval
    echo "(4a/4b run below, one at a time, on root-mounted tmpfs)"
    ROOT_TMPFS=1
else
    printf '\n[4a/4b] 4 full disk during eval and train: SKIPPED: no user namespace (unshare -rm) and not root, so no tmpfs to fill\n'
fi
probe 4c "4 malformed URL" 2 "$KT" eval qa.yaml --data "http://[::1" --model "$TINY" --out url-eval
n=0
for word in "new_task.eval_n=0" "new_task.counts={area: -5}" "new_task.counts={nosuch: 5}" "new_task.strategy=foo"; do
    n=$((n + 1))
    probe "4d$n" "4 $word (must fail before the run folder exists)" 2 "$KT" run tiny-exp.yaml out="$S/nt-run$n" "$word"
    after "4d$n" "check \"run folder: \$(exists \"\$S/nt-run$n\")\""
done
probe 4e "4 malformed adapter_config.json (eval --adapter)" 2 \
    "$KT" eval qa.yaml --model "$TINY" --adapter a-badjson --out a1
probe 4f "4 truncated adapter_model.safetensors (eval --adapter)" 2 \
    "$KT" eval qa.yaml --model "$TINY" --adapter a-cut --out a2
probe 4g "4 adapter holding adapter_model.bin, a pickle (eval --adapter)" 2 \
    "$KT" eval qa.yaml --model "$TINY" --adapter a-pickle --out a3
probe 4h "4 adapter holding adapter_model.bin, a pickle (merge)" 2 "$KT" merge a-pickle --out a4

probe 5a "5 data path package:/etc/passwd" 2 "$KT" eval etc-passwd.yaml --model "$TINY" --out p1
probe 5b "5 data path package:../x" 2 "$KT" eval dotdot.yaml --model "$TINY" --out p2
probe 5c "5 duplicate key in a task spec" 2 "$KT" eval twice.yaml --model "$TINY" --out p3
probe 5d "5 duplicate key in an experiment config" 2 "$KT" run twice-exp.yaml out="$S/twice-run"
probe 5e "5 javascript: link in a task description (keeptune report of a results.json)" 0 "$KT" report js-run
after 5e 'links js-run/report.md js-run/report.html'
probe 5f "5 misspelt override section trainn.lr=1" 2 "$KT" run tiny-exp.yaml out="$S/o1" trainn.lr=1
probe 5g "5 misspelt override train.lr.x=1" 2 "$KT" run tiny-exp.yaml out="$S/o2" train.lr.x=1
probe 5h "5 SQuAD paragraph with an empty qas" 2 "$KT" eval squad-seed --data squad-noqas.json --model "$TINY" --out q1
probe 5i "5 SQuAD article holding qas but no paragraphs" 2 \
    "$KT" eval squad-seed --data squad-nopara.json --model "$TINY" --out q2

probe 6a "not yet probed: read-only KEEPTUNE_CACHE (the embedded model; refused before its conversion)" 2 \
    unshare -rm sh -c "mount --bind $S/ro-cache $S/ro-cache && mount -o remount,bind,ro $S/ro-cache && KEEPTUNE_CACHE=$S/ro-cache exec $KT eval squad --limit 1 --out $S/ro-eval"
probe 6b "not yet probed: train.lr=1e308" 2 "$KT" train "${TRAIN[@]}" out="$S/lr-run" train.lr=1e308
after 6b 'check "checkpoints kept: $(cd "$S/lr-run/checkpoints" 2>/dev/null && echo step-* || echo none)"'
flush

if [ "${ROOT_TMPFS:-}" = 1 ]; then
    mount -t tmpfs -o size=12k tmpfs disk-eval
    probe 4a "4 full disk during eval (a 12 KiB tmpfs)" 2 "$KT" eval qa60.yaml --model "$TINY" --out disk-eval/eval --batch-size 4
    flush; umount disk-eval
    mount -t tmpfs -o size=64k tmpfs disk-train
    probe 4b "4 full disk during train (a 64 KiB tmpfs)" 2 "$KT" train "${TRAIN[@]}" out=disk-train/run train.checkpoints=3
    after 4b 'check "left in run/checkpoints on the full disk: $(ls -A disk-train/run/checkpoints | tr "\n" " ")"'
    flush; umount disk-train
fi

# --- 1: the exported adapter cut short (needs 1a's g.ckpt) --------------------------------------------------------
head -c $(( $(stat -c%s g.ckpt) / 2 )) g.ckpt >t.ckpt
"$PY" - <<'EOF' >>"$S/logs/setup.log" 2>&1
from keeptune.interop.mindspore_ckpt import read_checkpoint, tensor_records
lora = list(read_checkpoint("g.ckpt").items())  # 8 tensors: 2 layers x (q, v) x (A, B)
for name, k in (("ms-layer0.ckpt", 4), ("ms-six.ckpt", 6)):  # as MindSpore writes it (no length note), cut at a record
    open(name, "wb").write(b"".join(r for n, t in lora[:k] for r in tensor_records(n, t)))
EOF
probe 1b "1 keeptune's .ckpt cut in half (head -c), imported: the issue's command" 2 \
    "$KT" import t.ckpt --what adapter --alpha 16
probe 1c "1 a MindSpore-written .ckpt (no length note) cut at the record boundary after layer 0, --model given" 2 \
    "$KT" import ms-layer0.ckpt --alpha 8 --model "$TINY" --out ms0-out
after 1c 'check "output folder: $(exists "$S/ms0-out")"'
probe 1d "1 a MindSpore-written .ckpt cut inside layer 1 (6 of 8 tensors), no base given" 2 \
    "$KT" import ms-six.ckpt --alpha 8 --out ms6-out
probe 1e "1 the whole export imported back (the right result: the same tensors)" 0 \
    "$KT" import g.ckpt --alpha 8 --model "$TINY" --out back
after 1e '"$PY" - "$A" back <<"EOF" 2>&1 | while read -r l; do check "$l"; done
import sys
from safetensors.torch import load_file
a, b = (load_file(f"{d}/adapter_model.safetensors") for d in sys.argv[1:])
same = [k for k in a if k in b and (a[k] == b[k]).all()]
print(f"imported adapter: {len(b)} tensors, {len(same)} of the original {len(a)} equal")
EOF'
flush

# --- 4: Ctrl-C, in the foreground, one at a time; the interrupted eval run again --------------------------------
interrupt 4i "4 SIGINT (Ctrl-C) during train" 'compgen -G "$S/int-train/checkpoints/step-*" >/dev/null' \
    "$KT" train "${TRAIN[@]}" out="$S/int-train" train.epochs=20 train.checkpoints=60
interrupt 4j "4 SIGINT (Ctrl-C) during eval" '[ "$(cat "$S/int-eval/predictions.jsonl" 2>/dev/null | wc -l)" -ge 8 ]' \
    "$KT" eval qa400.yaml --model "$TINY" --out "$S/int-eval" --batch-size 4
probe 4k "4 the interrupted eval, the same command again (resumes)" 0 \
    "$KT" eval qa400.yaml --model "$TINY" --out "$S/int-eval" --batch-size 4
after 4k 'check "$(grep -o "resuming: [0-9]* of [0-9]* samples already in" logs/4k.log || echo "NO resuming line"); predictions: $(sort -u int-eval/predictions.jsonl | wc -l) distinct lines (want 400)"'
flush

# --- not yet probed: two sweeps started at once on one folder ---------------------------------------------------
t0=$SECONDS
timeout -k 5 300 "$KT" sweep both.yaml >logs/6c1.log 2>&1 </dev/null &
pid1=$!
timeout -k 5 300 "$KT" sweep both.yaml >logs/6c2.log 2>&1 </dev/null &
pid2=$!
wait "$pid1"; rc1=$?
wait "$pid2"; rc2=$?
report 6c1 "not yet probed: two sweeps started at once on one folder (command 1 of 2; timeout 300s)" 0 logs/6c1.log \
    "$rc1" $((SECONDS - t0)) "$KT sweep both.yaml &"
report 6c2 "not yet probed: two sweeps started at once on one folder (command 2 of 2)" 0 logs/6c2.log "$rc2" \
    $((SECONDS - t0)) "$KT sweep both.yaml &"
check "trials run, both commands: $(cat logs/6c1.log logs/6c2.log | grep -c '== sweep both: trial') (want 2);" \
    "runs with results.json: $(find sweep -name results.json 2>/dev/null | wc -l) (want 2);" \
    "sweep.md: $([ -f sweep/sweep.md ] && echo yes || echo no)"
"$PY" - <<'EOF' 2>&1 | tail -n 3 | while read -r l; do check "$l"; done
import glob
import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
optuna.logging.set_verbosity(optuna.logging.WARNING)
for path in glob.glob("sweep/*.journal"):
    storage = JournalStorage(JournalFileBackend(path))
    for summary in optuna.get_all_study_summaries(storage):
        trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
        lrs = [t.params.get("train.lr") for t in trials]
        print(f"study {summary.study_name}: {len(trials)} trials {[t.state.name for t in trials]}, "
              f"train.lr {['%.3g' % x for x in lrs]}, the start trial 2e-06 queued {lrs.count(2e-6)} time(s) (want 1)")
EOF
report_md=$(find sweep -name report.md 2>/dev/null | head -n 1)
[ -n "$report_md" ] && links "$report_md" "${report_md%.md}.html"

echo
echo "total $((SECONDS - START))s; scratch left in $S"
