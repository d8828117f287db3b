"""Reporting: leaderboard, tables and plots derived from run records."""
