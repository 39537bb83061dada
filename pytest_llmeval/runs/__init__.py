"""What a finished run is: its summary and gates, its comparison with a baseline, its
JSON report and the lines that render it."""
