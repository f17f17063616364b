"""Why a placement attempt failed."""

from __future__ import annotations


class Unschedulable(Exception):
    """No acceptable placement.  ``no_fit`` marks Karmada's FitError - not a single
    node group passed the filters - after which the workload is removed everywhere;
    any other failure (too little capacity, spread constraints unmet) keeps the
    previous placement."""

    def __init__(self, message: str, *, no_fit: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.no_fit = no_fit
