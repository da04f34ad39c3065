from __future__ import annotations

from harness.files import write_atomic


def test_write_atomic_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "deep" / "state.json"
    write_atomic(path, '{"a": 1}')
    write_atomic(path, '{"a": 2}')
    assert path.read_text() == '{"a": 2}'
    write_atomic(tmp_path / "ckpt.pt", b"\x00\x01")
    assert (tmp_path / "ckpt.pt").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["ckpt.pt", "state.json"]
