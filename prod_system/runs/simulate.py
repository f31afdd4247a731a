"""The core simulation: the whole window through the stages, without Dagster, then the reconciliation."""

from __future__ import annotations

import time

from prod_system.analysis.observer import observe
from prod_system.common.timeutil import bar_ends
from prod_system.config import SystemConfig
from prod_system.data.instruments import LOG_DIR_FILE, resolve_instruments
from prod_system.log_dir import LogDir
from prod_system.models.dag import load_model
from prod_system.runs.finish import RunSummary, finish_run
from prod_system.runs.stages import (
    BrokerFactory,
    ClockFactory,
    Progress,
    broker_factory_for,
    guard_predictions,
    load_store,
    logger,
    predictions_table,
    replay_clock,
    run_model,
    run_trading,
    write_stage_tables,
)
from prod_system.trading.positions import run_sizing


def simulate(
    config: SystemConfig,
    overwrite: bool = False,
    progress: Progress | None = None,
    clock_factory: ClockFactory = replay_clock,
    broker_factory: BrokerFactory | None = None,
) -> RunSummary:
    """Run the whole window in the pure core (no Dagster) and write its system log dir.

    The broker is the config's (mocked by default); ``clock_factory`` lets a test drive a local
    exchange's clock along with the replay."""
    began = time.perf_counter()
    config, instruments = resolve_instruments(config)  # an asset without exchange rules: refused here
    dag = load_model(config.model, config.bar_delta, config.model_params)
    log_dir = LogDir.for_config(config)
    log_dir.check_free(overwrite)
    store = load_store(config, dag)  # bad market data fails here, before anything is written
    log_dir.prepare(config, overwrite=overwrite)
    instruments.write(log_dir.path / LOG_DIR_FILE)  # the rules the run trades under
    bars = bar_ends(config.start, config.end, config.bar_delta)
    with log_dir.capture_log(logger):
        logger.info(
            "simulation of %s from %s to %s (%d bars), run id %s",
            config.model,
            config.start,
            config.end,
            len(bars),
            config.run_id,
        )
        outputs = run_model(config, dag, store, bars, progress)
        predictions, quality = guard_predictions(config, store, predictions_table(dag, outputs), bars)
        targets = run_sizing(config, predictions, bars)
        trading = run_trading(
            config,
            store,
            targets,
            bars,
            progress=progress,
            clock_factory=clock_factory,
            broker_factory=broker_factory or broker_factory_for(config, log_dir),
        )
        first = bars[0]
        write_stage_tables(
            log_dir,
            {
                "dag/node_outputs": outputs.node_outputs,
                "dag/profiling": outputs.profiling,
                "target_positions": targets,
                "data_quality": quality,
                **trading.tables,
            },
            first,
        )
        summary = finish_run(log_dir, config, trading.tables["portfolio/statistics"], began, engine="core")
    report = observe(log_dir.path, store=store)
    summary.reconciliation, summary.report = report.summary["verdict"], str(report.path)
    return summary
