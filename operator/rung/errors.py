"""Errors that reach users: one line naming the field and the fix."""


class InputError(Exception):
    """Bad input rejected at a boundary (manifest, CLI argument, trial command)."""

    def __init__(self, field: str, problem: str, fix: str = ""):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(self.line())

    def line(self) -> str:
        text = f"{self.field}: {self.problem}"
        return f"{text}; {self.fix}" if self.fix else text
