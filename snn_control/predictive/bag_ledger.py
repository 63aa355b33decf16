"""Which recorded bags a fine-tuning trainer has already used, kept on disk so that a
restarted trainer does not fine-tune on the same sessions again.

The ledger is ``OUTPUT_DIR/used_bags.json`` (a sorted list of absolute bag paths), written
atomically after every change. A round's bags are marked only when the round completes
(:meth:`BagLedger.marking`): a round that crashes leaves them for the next one. A ledger
that cannot be read is moved aside as ``used_bags.json.corrupt`` (nothing is deleted) and
the trainer starts with an empty one, saying so.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path


class BagLedger:
    FILENAME = "used_bags.json"

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / self.FILENAME
        self.problem: str | None = None  # why an existing ledger was not read (None: fine)
        self._used: set[str] = set()
        if self.path.exists():
            try:
                entries = json.loads(self.path.read_text())
                if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
                    raise ValueError("expected a JSON list of paths")
                self._used = set(entries)
            except (ValueError, OSError) as exc:
                aside = self.path.with_name(self.FILENAME + ".corrupt")
                os.replace(self.path, aside)
                self.problem = f"{self.path} unreadable ({exc}); moved to {aside}, starting with no used bags"

    @staticmethod
    def _key(bag: Path) -> str:
        return str(Path(bag).expanduser().resolve())

    def __contains__(self, bag: Path) -> bool:
        return self._key(bag) in self._used

    def __len__(self) -> int:
        return len(self._used)

    def add(self, bags) -> None:
        keys = {self._key(b) for b in bags}
        if keys <= self._used:
            return
        self._used |= keys
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.FILENAME + ".tmp")
        tmp.write_text(json.dumps(sorted(self._used), indent=1) + "\n")
        os.replace(tmp, self.path)

    @contextmanager
    def marking(self, bags):
        """Marks ``bags`` used when the block completes; an exception leaves them unmarked,
        so a round that fails midway does not lose its data."""
        yield
        self.add(bags)
