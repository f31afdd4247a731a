# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: language_info
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   language_info:
#     name: python
# ---

# %% [markdown]
# # PnL real-time observer: production vs research
#
# One run of a model reconciled with its research portfolio. `prod-system reconcile`, the observer
# schedule (paper and prod, every 5 minutes) and the end of every simulation execute this notebook into
# the run's report folder, `{window}/pnl_realtime_observer_notebook/{run_timestamp}/`, beside
# `summary.json` and the tables. By hand: set `report_dir = None` and the parameters below (`root`, `model`,
# and optionally `run_mode`, `trigger`, `start`, `end`): the notebook reconciles the latest such run itself.
# Every cell calls `prod_system.analysis.observer_views`.

# %% [markdown]
# ## Notebook config (parameters)

# %%
from IPython import get_ipython
from IPython.display import Image, Markdown, display

from prod_system.analysis import observer_views as views

views.tables_without_index(get_ipython())

# %% tags=["parameters"]
model = "C1b"
root = "system_runs"
run_mode = None
trigger = None
start = None
end = None
report_dir = None

# %%
run = views.open_run(report_dir, root, model, run_mode, trigger, start, end)
display(
    views.parameters(
        model=model,
        root=root,
        run_mode=run_mode,
        trigger=trigger,
        start=start,
        end=end,
        report_dir=report_dir,
        report_folder=run.directory,
    )
)
display(Markdown(f"**{views.verdict(run)}**"))

# %% [markdown]
# ## System config of the run

# %%
print(views.system_config(run))

# %% [markdown]
# ## The account now
#
# Balances, each with its source and time: in prod the exchange's account as the session last fetched it
# (`broker/account`, at its fetch time), then the portfolio's figures at its last bar; then the open positions
# the portfolio holds at that bar.

# %%
balances, positions = views.account_now(run)
display(balances)
display(positions)

# %% [markdown]
# ## DAG outputs and execution time
#
# Each node's values over the reconciled bars, then its execution time per node and per bar.

# %%
display(views.dag_outputs(run))

# %%
display(views.node_timing(run))
display(views.bar_timing(run))
display(Image(data=run.png("timing"), alt="execution time per bar and node"))

# %% [markdown]
# ## Production portfolio

# %%
figures, by_asset, plot = views.production_portfolio(run)
display(figures)
display(Image(data=plot, alt="production: cumulative PnL and gross market value"))
display(by_asset)

# %% [markdown]
# ## Research equivalent
#
# The run's recorded predictions traded at research's prices with the same costs.

# %%
figures, by_asset = views.research_portfolio(run)
display(figures)
display(by_asset)

# %% [markdown]
# ## Production vs research
#
# Per-bar PnL, holdings and targets side by side, the first divergence and the attribution of the gap.

# %%
display(Markdown(f"**{views.verdict(run)}**"))
display(views.headline(run))
display(Image(data=run.png("cumulative_pnl"), alt="cumulative PnL, production vs research"))
display(Image(data=run.png("holdings_difference"), alt="holdings difference per asset"))

# %%
display(Markdown(f"First divergence: {views.first_divergence(run)}"))
display(Markdown("Largest per-bar PnL differences (USDT)"))
display(views.per_bar_pnl(run))
for name in ("pnl", "holdings", "target"):
    display(Markdown(f"Largest {name} differences by asset (USDT)"))
    display(views.largest_differences(run, name))

# %%
components, per_asset = views.gap_attribution(run)
display(Markdown(views.gap_note(run)))
display(components)
display(per_asset)

# %% [markdown]
# ## Costs and performance

# %%
display(views.costs(run))
display(views.performance_table(run))

# %% [markdown]
# ## Portfolio vs exchange statement
#
# Prod: the exchange's income history and wallet beside the portfolio's accounts.

# %%
statement_verdict, totals, notes = views.exchange_statement(run)
display(Markdown(f"**{statement_verdict}**"))
display(totals)
for note in notes:
    display(Markdown(f"- {note}"))
