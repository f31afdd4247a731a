# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Historical PnL for investors
#
# The investor model's historical simulation, then its four cumulative-PnL windows with their performance
# figures: what the daily investor job publishes to S3 (`pnl_for_investors/cumulative_pnl.{window}.png`,
# `performance.{window}.md`). Every window comes from `prod_system.analysis.investor`, the functions the
# Dagster assets publish with; the plots from `prod_system.analysis.plots.investor_cumulative_pnl`, the
# figures from `prod_system.analysis.performance`. Every PnL is net of fees and funding, in USDT.

# %%
from IPython.display import Image, Markdown, display

from prod_system.analysis import investor, performance
from prod_system.errors import NoInvestorDataError

# %% tags=["parameters"]
model = "C3a"  # the investor model
root = "system_runs"  # the root of the system log dirs
run_mode = "prod"  # the run mode of the live sessions: prod or paper_trading
windows = None  # the windows to show, e.g. ["since_2022", "last_24hours"]; None: all four

# %%
windows = investor.check_windows(windows)
display(
    Markdown(f"Model **{model}**, log root `{root}`, live sessions of **{run_mode}**; windows: {', '.join(windows)}.")
)


def table(rows: list[tuple[str, str]]) -> Markdown:
    return Markdown("\n".join(["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]))


def show(window: str) -> None:
    """The window's cumulative PnL plot and performance figures, or the line that says why it has none."""
    if window not in windows:
        display(Markdown(f"*{window}: not among the windows asked for.*"))
        return
    try:
        view = investor.investor_window(root, model, window, run_mode)
    except NoInvestorDataError as error:
        display(Markdown(f"**No data for {window}**: {error}."))
        return
    display(Markdown(f"**{view.title}**"))
    display(Image(data=view.plot()))
    display(Markdown("\n".join([view.source, "", *performance.markdown(view.performance())])))


# %% [markdown]
# ## The historical simulation
#
# The latest historical simulation of the model (`{root}/{model}/historical_pnl/{start}.{end}/`): the model in
# batch over the whole market-data history, traded by the research portfolio.

# %%
try:
    history = investor.historical_summary(root, model)
except NoInvestorDataError as error:
    display(Markdown(f"**No historical simulation**: {error}."))
else:
    display(table(history.rows()))

# %% [markdown]
# ## since_2019: cumulative PnL since 2019-01-01
#
# The historical simulation from 2019-01-01 (or from the first day of the market data, which the title notes).

# %%
show("since_2019")

# %% [markdown]
# ## since_2022: cumulative PnL since 2022-01-01
#
# The historical simulation from 2022-01-01.

# %%
show("since_2022")

# %% [markdown]
# ## last_24hours: the last 24 hours of live trading
#
# The live sessions of the run mode, the 24 hours up to their last recorded bar (across sessions).

# %%
show("last_24hours")

# %% [markdown]
# ## last_5minutes: the current live session
#
# The latest live session, from its first bar to its last recorded one (published every 5 minutes).

# %%
show("last_5minutes")
