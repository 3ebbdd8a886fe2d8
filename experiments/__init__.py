"""Runnable code: entry points, sweeps, plots and reports. The math lives in ``gated``."""
