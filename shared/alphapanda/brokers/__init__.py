"""Traders: one per broker kind behind the `Trader` interface, chosen by `TraderFactory`."""
