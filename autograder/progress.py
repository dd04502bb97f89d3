"""A progress bar over the students of a grading run (tqdm, on stderr).

Shows students done out of all, how many are running and how many failed (status other
than ``graded``, ``missing`` or ``invalid``), the rate and the time left. It draws only when
stderr is a terminal: in a log file, a pipe or CI it prints nothing.
"""
from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, done: int = 0, file: TextIO | None = None, enabled: bool | None = None):
        file = file if file is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(file, "isatty", lambda: False)())
        self.enabled = enabled
        self.failed = 0
        self.running = 0
        # students skipped (already graded on the same inputs) count as done, not in the rate
        self.bar = tqdm(total=total, initial=done, file=file, disable=not enabled, unit="student",
                        dynamic_ncols=True, smoothing=0.05, mininterval=0.5, desc="grading")
        self._post()

    def _post(self) -> None:
        self.bar.set_postfix_str(f"running {self.running}, failed {self.failed}", refresh=False)

    def set_running(self, n: int) -> None:
        if n != self.running:
            self.running = n
            self._post()
            self.bar.refresh()

    def finished(self, failed: bool) -> None:
        self.failed += bool(failed)
        self._post()
        self.bar.update(1)

    def write(self, line: str, file: TextIO | None = None) -> None:
        """Print a line (stdout by default) without breaking the bar."""
        out = file if file is not None else sys.stdout
        if self.enabled:
            tqdm.write(line, file=out)
        else:
            print(line, file=out, flush=True)

    def close(self) -> None:
        self.bar.close()
