"""The topic rules file as the broker watches it: read, refused, changed on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from certmq.auth.topics import TopicRulesError
from certmq.broker.topic_rules_file import TopicRulesFile
from certmq.config import Config

RULE = '[[rule]]\npermission = "allow"\ntopic = "{topic}"\n'


def test_the_file_comes_from_the_configuration(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path)
    assert TopicRulesFile.from_config(config) is None
    config.auth.acl_file = "rules.toml"
    config.auth.acl_default = "deny"
    rules_file = TopicRulesFile.from_config(config)
    assert rules_file is not None
    assert (rules_file.path, rules_file.default_allow) == (tmp_path / "rules.toml", False)


def test_a_change_is_seen_once_and_a_refused_file_is_not_read_again_until_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(RULE.format(topic="a/#"))
    rules_file = TopicRulesFile(path, default_allow=False)
    assert [rule.topic for rule in rules_file.load().rules] == ["a/#"]
    assert not rules_file.changed()

    # The same size and modification time, but another file renamed over it: a change.
    replacement = tmp_path / "next.toml"
    replacement.write_text(RULE.format(topic="b/#"))
    stat = path.stat()
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    replacement.replace(path)
    assert rules_file.changed()
    assert [rule.topic for rule in rules_file.load().rules] == ["b/#"]

    path.write_text("[[rule]\n")
    assert rules_file.changed()
    with pytest.raises(TopicRulesError, match="not valid TOML"):
        rules_file.load()
    assert not rules_file.changed(), "a refused file is reported once"
    path.unlink()
    assert rules_file.changed()
    with pytest.raises(TopicRulesError, match="cannot read"):
        rules_file.load()
