"""The statistics of STATISTICS.md: paired and unpaired tests, intervals, verdicts, Holm,
the minimum detectable effect. Nothing here knows about runs, reports or pytest."""
