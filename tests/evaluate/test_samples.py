"""Where a task's samples come from (keeptune.evaluate.samples): `package:` and `shared:` paths stay inside
their folders, and a path that does not is an error naming the spec and its field."""
from __future__ import annotations

import pytest

from keeptune.data.shared import PACKAGED_DIR, PACKAGED_SQUAD
from keeptune.evaluate.samples import resolve_data_path
from keeptune.evaluate.spec import SpecError, load_spec

SPEC = ("name: p\ndata: {{path: '{path}', layout: squad_v1}}\nprompt: squad-seed\nreference: label\n"
        "metrics: [exact_match]\n")


def spec_at(tmp_path, path: str):
    file = tmp_path / "p.yaml"
    file.write_text(SPEC.format(path=path), encoding="utf-8")
    return file, load_spec(file).spec


def test_a_packaged_file_resolves_into_the_package(tmp_path):
    assert resolve_data_path(spec_at(tmp_path, f"package:{PACKAGED_SQUAD.name}")[1]) == PACKAGED_SQUAD.resolve()


@pytest.mark.parametrize("path,why", [
    ("package:/etc/passwd", f"package:/etc/passwd: leads out of {PACKAGED_DIR}"),
    ("package:../x", f"package:../x: leads out of {PACKAGED_DIR}"),
    ("package:x.json", "package:x.json: keeptune ships no such file"),
])
def test_a_packaged_path_outside_the_package_names_the_spec_and_field(tmp_path, path, why):
    file, spec = spec_at(tmp_path, path)
    with pytest.raises(SpecError) as info:
        resolve_data_path(spec)
    assert str(info.value).startswith(f"{file}: field 'data.path': {why}")


def test_start_takes_the_part_after_it_and_a_start_past_the_end_names_the_file(tmp_path):
    """data.start skips samples before data.limit takes them: the part a held-out set reads beside a gate's."""
    from keeptune.core.errors import DataError
    from keeptune.evaluate.samples import load_task_samples

    data = tmp_path / "qa.jsonl"
    data.write_text("".join(f'{{"question": "q{i}", "answer": "a{i}"}}\n' for i in range(7)), encoding="utf-8")
    spec = tmp_path / "qa.yaml"
    spec.write_text(f"name: qa\ndata: {{path: {data}}}\nprompt: '{{question}}'\nreference: answer\n"
                    "metrics: [{type: exact_match}]\n", encoding="utf-8")

    def questions(**changes):
        compiled = load_spec(str(spec), changes)
        return [s.fields["question"] for s in load_task_samples(compiled, resolve_data_path(compiled.spec))]

    every = questions()
    assert questions(**{"data.start": 2, "data.limit": 3}) == every[2:5]
    assert questions(**{"data.start": 5}) == every[5:]
    with pytest.raises(DataError, match=rf"{data.name}: data.start is 7, but the file has 7 samples"):
        questions(**{"data.start": 7})
    with pytest.raises(SpecError, match="data.start"):
        load_spec(str(spec), {"data.start": -1})
