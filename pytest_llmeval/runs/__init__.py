"""What a finished run is: its summary (partition rules, budgets), its comparison with a
baseline, its JSON report and the lines that render it."""
