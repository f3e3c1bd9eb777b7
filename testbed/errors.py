"""The one error type the testbed raises for things a user can fix."""


class TestbedError(Exception):
    """A problem with a one-line explanation and a distinct exit code."""

    __test__ = False  # not a pytest test class

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code
