"""Trading: sizing (target positions), orders, the portfolio and its accounting, and the brokers."""
