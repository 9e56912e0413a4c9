"""User-facing errors.

Every mistake a user can make (bad config key, missing file, unknown loss, wrong module path, ...) is raised as a
:class:`UserError`. The CLI prints its message and exits with status 2, without a traceback, before any work starts.
Anything else is a bug in kdlab and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input.

    ``key`` names the config key (dotted, e.g. ``distill.matches[2].student``) or the CLI argument at fault, and
    ``fix`` says how to correct it; both are part of the printed message.
    """

    exit_code = 2

    def __init__(self, problem: str, *, key: str | None = None, fix: str | None = None) -> None:
        self.problem = problem
        self.key = key
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = f"{self.key}: " if self.key else ""
        hint = f"\n  fix: {self.fix}" if self.fix else ""
        return f"{where}{self.problem}{hint}"
