"""The topic rules file (``auth.acl_file``, docs/configuration.md): read at start, again on
SIGHUP, and whenever it changes on disk.

Its stamp (inode, modification time, size) is looked at every :data:`CHECK_INTERVAL` seconds,
a stat call. A file that cannot be read or does not parse is refused with a log line that says
why, and the rules in use stay; its stamp is remembered all the same, so that a broken file is
reported once, and the next change (the fix) is read.
"""

from __future__ import annotations

from pathlib import Path

from certmq.auth.topics import TopicRules
from certmq.config import Config
from certmq.file_stamp import FileStamp, file_stamp

CHECK_INTERVAL = 1.0  # seconds


class TopicRulesFile:
    def __init__(self, path: Path, default_allow: bool) -> None:
        self.path = path
        self.default_allow = default_allow
        self._stamp: FileStamp | None = None

    @classmethod
    def from_config(cls, config: Config) -> TopicRulesFile | None:
        """The file ``auth.acl_file`` names (relative to the data directory); None when empty."""
        auth = config.auth
        if not auth.acl_file:
            return None
        path = Path(auth.acl_file)
        if not path.is_absolute():
            path = config.data_dir / path
        return cls(path, default_allow=auth.acl_default == "allow")

    def load(self) -> TopicRules:
        """Read and parse the file; raises TopicRulesError (which names the file and the problem)."""
        # The stamp first: a change while reading makes the next check read the file again.
        self._stamp = file_stamp(self.path)
        return TopicRules.load(self.path, self.default_allow)

    def changed(self) -> bool:
        """Whether the file on disk is not the one last read (or refused)."""
        return file_stamp(self.path) != self._stamp
