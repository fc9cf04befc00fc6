"""The offline default of `retention.preservation`: passages and questions the base model writes itself.

Offline, the only SQuAD text keeptune has is the Super Bowl 50 article the gate evaluates, so it
cannot be preservation data. Instead the base model writes a short encyclopedia paragraph on each
of `TOPICS` (nature, science, history, crafts: nothing of the gate's article: no sport, broadcast,
music, California or Roman numerals), once as an overview and once on its history (`FRAMES`), then
one question about each paragraph. Sample i is topic i mod 128 in frame i // 128, so N samples are
the first N of the same list whatever N is, and each is greedy (identical in any batch): the data is
deterministic for a model. Generated with keeptune's engine and cached in the run directory
(CACHE/passages/, CACHE/questions/: resumable, redone when the model or the prompts change), the
samples in CACHE/samples.jsonl. docs/retention.md weighs this choice against the others.
"""
from __future__ import annotations

from pathlib import Path

from keeptune.core.io import write_jsonl
from keeptune.evaluate.run import GenerationTask, generate_raw
from keeptune.evaluate.samples import Sample

# The fields of a self-written sample (a retention task's prompt must read only these to render it).
FIELDS = ("id", "topic", "passage", "question")
TOPICS = (
    "glaciers", "photosynthesis", "the honeybee", "volcanoes", "the printing press", "coral reefs",
    "the water cycle", "the Silk Road", "ocean tides", "the human heart", "windmills", "the Great Wall of China",
    "penicillin", "the Sahara Desert", "the octopus", "earthquakes", "paper making", "the Moon", "bamboo",
    "the magnetic compass", "tropical rainforests", "the Nile", "vaccines", "tea", "the telescope",
    "the Amazon River", "salt", "the periodic table", "the camel", "lighthouses", "mechanical clocks",
    "the snow leopard", "bread baking", "the Pyramids of Giza", "rice farming", "the microscope", "the blue whale",
    "the steam engine", "cinnamon", "the Alps", "silk", "rainbows", "mushrooms", "the bicycle",
    "the Library of Alexandria", "ants", "wind power", "the human skeleton", "stone arch bridges", "the Dead Sea",
    "maps", "the elephant", "cocoa", "the solar system", "owls", "the Mediterranean Sea", "cotton",
    "the immune system", "sundials", "the Himalayas", "sharks", "glass making", "thunderstorms", "the potato",
    "the abacus", "penguins", "the Danube", "olive trees", "electric batteries", "the kangaroo", "caves", "wool",
    "comets", "the lotus plant", "the metric system", "beavers", "the Andes", "soap", "lightning",
    "the spice trade", "frogs", "the Pacific Ocean", "pottery", "DNA", "oak trees", "the telephone",
    "hurricanes", "the giraffe", "cheese making", "the Black Death", "roses", "the Eiffel Tower", "dolphins",
    "the alphabet", "natural rubber", "the Atlantic puffin", "the Ice Age", "the Mongol Empire", "sunflowers",
    "magnets", "snowflakes", "tortoises", "the Renaissance", "sugar cane", "the Milky Way", "the wheel", "bats",
    "the Galapagos Islands", "the kidneys", "porcelain", "the monsoon", "the giant panda",
    "the Industrial Revolution", "fossils", "the lion", "canals", "ink", "icebergs", "butterflies",
    "the Gobi Desert", "wheat", "Viking ships", "the lungs", "salmon", "castles", "maple syrup",
    "the planet Jupiter", "clouds",
)
FRAMES = ("Write a short encyclopedia paragraph about {topic}.",
          "Write a short encyclopedia paragraph about the history of {topic}.")
QUESTION = ("Here is a paragraph:\n\n{passage}\n\nWrite one question that this paragraph answers. Reply with the "
            "question only.")
FALLBACK_QUESTION = "What does the passage say about {topic}?"  # when the model writes no question
PASSAGE_TOKENS, QUESTION_TOKENS = 128, 32  # a SQuAD paragraph is ~150 tokens; a question ~15


def instruction(tokenizer, text: str) -> str:
    """`text` as a user turn of the model's chat template, or as it is when the tokenizer has none."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return f"{text}\n\n"


def tidy_passage(raw: str) -> str:
    """One paragraph: markdown marks and line breaks gone, cut after its last full sentence."""
    text = " ".join(line.strip().strip("#").strip() for line in raw.replace("**", "").splitlines() if line.strip())
    end = max(text.rfind(mark) for mark in ".!?")
    return text[:end + 1] if end >= len(text) // 3 else text  # a cut-off last sentence goes


def tidy_question(raw: str, topic: str) -> str:
    """The first line holding a question mark, up to it; else the fallback question about the topic."""
    for line in raw.splitlines():
        line = line.strip().strip("*\"").strip()
        if line.lower().startswith("question:"):
            line = line[len("question:"):].strip()
        if "?" in line:
            return line[:line.index("?") + 1]
    return FALLBACK_QUESTION.format(topic=topic)


def self_written(n: int, model, tokenizer, cache: Path, identity: dict, batch_size: int = 64) -> tuple[str, list]:
    """(description, samples) of the first n self-written samples (at most len(TOPICS) x len(FRAMES))."""
    cache = Path(cache)
    n = min(n, len(TOPICS) * len(FRAMES))
    topics = [TOPICS[i % len(TOPICS)] for i in range(n)]
    ids = [f"self-{i:03d}" for i in range(n)]
    samples = [Sample(i, {}, f"{cache / 'passages'}: sample {i}") for i in ids]
    writing = {i: instruction(tokenizer, FRAMES[k // len(TOPICS)].format(topic=topics[k])) for k, i in enumerate(ids)}
    raw = generate_raw(GenerationTask("preservation-passages", samples, writing), model, tokenizer,
                       cache / "passages", PASSAGE_TOKENS, identity, batch_size)
    passages = {i: tidy_passage(raw[i]) for i in ids}
    kept = [k for k, i in enumerate(ids) if passages[i]]  # a model that writes nothing gives no sample
    asking = {ids[k]: instruction(tokenizer, QUESTION.format(passage=passages[ids[k]])) for k in kept}
    raw = generate_raw(GenerationTask("preservation-questions", [samples[k] for k in kept], asking), model,
                       tokenizer, cache / "questions", QUESTION_TOKENS, identity, batch_size)
    out = []
    for line, k in enumerate(kept, 1):
        fields = {"id": ids[k], "topic": topics[k], "passage": passages[ids[k]],
                  "question": tidy_question(raw[ids[k]], topics[k])}
        out.append(Sample(ids[k], fields, f"{cache / 'samples.jsonl'}:{line}"))
    write_jsonl(cache / "samples.jsonl", (s.fields for s in out))
    fallback = sum(s.fields["question"] == FALLBACK_QUESTION.format(topic=s.fields["topic"]) for s in out)
    return (f"self-written by the base model ({len(out)} passages on {len(set(topics))} topics, "
            f"{fallback} with the fallback question)"), out
