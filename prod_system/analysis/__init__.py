"""Analysis of runs: the research portfolio, reconciliation with production, the observer report,
PnL reports and plots."""
