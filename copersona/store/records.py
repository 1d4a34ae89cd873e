"""Records of the store's own bookkeeping: the run log of every stage that ran against it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunRecord:
    """One run of a stage: when it started and finished, how it ended, and what it counted.

    ``status`` is ``running`` (or killed before it could say otherwise), ``done`` or ``failed``;
    ``details`` holds the stage's own counts (and ``seconds``; ``error`` when it failed).
    """

    run_id: int
    stage: str
    started: float
    finished: float | None
    status: str
    details: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float | None:
        return round(self.finished - self.started, 2) if self.finished is not None else None
