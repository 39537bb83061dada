"""Views of runs as HTML: escaping and the page shell (kit), inline SVG charts (charts),
the run's page (report). Standard library only; no network at view time."""
