"""Processing of complete series: convert, score, record (worker processes)."""
