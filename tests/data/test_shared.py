"""Packaged and shared data files (keeptune.data.shared): a name never leads out of its folder."""
from __future__ import annotations

import pytest

from keeptune.core.errors import DataError
from keeptune.data import shared
from keeptune.data.shared import PACKAGED_DIR, PACKAGED_SQUAD, packaged_file, shared_file


def test_a_packaged_name_gives_the_shipped_file():
    assert packaged_file(PACKAGED_SQUAD.name) == PACKAGED_SQUAD.resolve()


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "../../../../etc/passwd", "sub/../../NOTICE"])
def test_a_packaged_name_that_leads_out_is_refused_naming_it(name):
    """Issue 28: `package:/etc/passwd` was opened and parsed; `package:../x` was a bare Errno 2."""
    with pytest.raises(DataError) as info:
        packaged_file(name)
    assert str(info.value) == f"package:{name}: leads out of {PACKAGED_DIR}; give a path inside it"


def test_a_packaged_name_that_is_not_shipped_lists_what_is():
    with pytest.raises(DataError) as info:
        packaged_file("nosuch.json")
    assert str(info.value) == f"package:nosuch.json: keeptune ships no such file; it ships {PACKAGED_SQUAD.name}"


def test_a_shared_path_that_leads_out_is_refused(tmp_path, monkeypatch):
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "secret.json").write_text("{}")
    monkeypatch.setattr(shared, "SHARED_ROOTS", (tmp_path,))
    with pytest.raises(DataError, match=r"^shared:\.\./\.\./secret.json: leads out of"):
        shared_file("../../secret.json", "hint")
    (tmp_path / "shared" / "data" / "ok.json").write_text("{}")
    assert shared_file("ok.json", "hint") == tmp_path / "shared" / "data" / "ok.json"
