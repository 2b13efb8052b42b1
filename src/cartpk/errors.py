"""Exceptions raised by cartpk, one per kind of failure a user must act on, and the
warning of a fit whose result needs care."""


class DataError(ValueError):
    """A dataset failed validation; the message names column, rows and the problem."""


class ModelError(ValueError):
    """A model specification is invalid; the message names the file and the key or line."""


class SolverError(RuntimeError):
    """An ODE could not be solved; the message names the subject and the time reached."""


class FitError(RuntimeError):
    """A fit could not be carried out (as opposed to one that ran and did not converge)."""


class FitWarning(UserWarning):
    """A fit ran but its result needs care: not converged, or not identifiable."""
