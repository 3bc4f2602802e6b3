"""Noticing a change to the rule files: what a ConfigMap update, an edit and a new file do."""

from __future__ import annotations

import os
from pathlib import Path

from lockoutd.rules.watch import RuleFilesWatch


def test_nothing_changed_is_no_change(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules: []\n")
    watch = RuleFilesWatch([tmp_path])
    assert not watch.changed()


def test_an_edit_in_place_a_new_file_and_a_removed_one_are_changes(tmp_path: Path) -> None:
    rules = tmp_path / "a.yaml"
    rules.write_text("rules: []\n")
    watch = RuleFilesWatch([tmp_path])
    rules.write_text("rules: [] # edited\n")
    assert watch.changed()
    assert not watch.changed()  # reported once
    (tmp_path / "b.yml").write_text("rules: []\n")
    assert watch.changed()
    (tmp_path / "b.yml").unlink()
    assert watch.changed()
    (tmp_path / "notes.txt").write_text("not a rule file\n")
    assert not watch.changed()


def test_a_configmap_update_swaps_the_data_link(tmp_path: Path) -> None:
    for version in ("..v1", "..v2"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "a.yaml").write_text("rules: []\n")
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "a.yaml").symlink_to("..data/a.yaml")
    watch = RuleFilesWatch([tmp_path])
    link = tmp_path / "..data_tmp"
    link.symlink_to("..v2")
    os.replace(link, tmp_path / "..data")
    assert watch.changed()
