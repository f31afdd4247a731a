"""The clock resource: which clock each stage of a run reads "now" from."""

from __future__ import annotations

from typing import Literal

import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field

from prod_system.common.clock import Clock, RealClock
from prod_system.runs.stages import replay_clock


class ClockResource(ConfigurableResource):
    """'simulated': each stage replays the past on a clock of its own; 'real': the machine's UTC clock."""

    mode: Literal["simulated", "real"] = Field(default="simulated", description="'simulated' or 'real'")

    def for_stage(self, start: pd.Timestamp) -> Clock:
        return replay_clock(start) if self.mode == "simulated" else RealClock()
