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
# The model's historical simulation, then its four cumulative-PnL windows with their performance figures.
# Every PnL is net of fees and funding, in USDT.

# %%
# What the daily investor job publishes to S3 (pnl_for_investors/cumulative_pnl.{window}.png,
# performance.{window}.md), from the same functions: prod_system.analysis.investor. Investors read the HTML:
# no path and no operator's message in an output (a window without data is "not available yet").
from IPython.display import display

from prod_system.analysis import investor

# %% tags=["parameters"]
model = "C3a"  # the investor model
root = "system_runs"  # the root of the system log dirs
run_mode = "prod"  # the run mode of the live sessions: prod or paper_trading
windows = None  # the windows to show, e.g. ["since_2022", "last_24hours"]; None: all four

# %%
windows = investor.check_windows(windows)
display(investor.introduction(model, run_mode, windows))

# %% [markdown]
# ## The historical simulation
#
# The latest historical simulation of the model: the model in batch over the whole market-data history,
# traded by the research portfolio.

# %%
display(investor.historical_section(root, model))

# %% [markdown]
# ## since_2019: cumulative PnL since 2019-01-01
#
# The historical simulation from 2019-01-01 (or from the first day of the market data, which the title notes).

# %%
display(*investor.window_section(root, model, "since_2019", run_mode, windows))

# %% [markdown]
# ## since_2022: cumulative PnL since 2022-01-01
#
# The historical simulation from 2022-01-01.

# %%
display(*investor.window_section(root, model, "since_2022", run_mode, windows))

# %% [markdown]
# ## last_24hours: the last 24 hours of live trading
#
# The live sessions of the run mode, the 24 hours up to their last recorded bar (across sessions).

# %%
display(*investor.window_section(root, model, "last_24hours", run_mode, windows))

# %% [markdown]
# ## last_5minutes: the current live session
#
# The latest live session, from its first bar to its last recorded one (published every 5 minutes).

# %%
display(*investor.window_section(root, model, "last_5minutes", run_mode, windows))
