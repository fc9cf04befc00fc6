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
