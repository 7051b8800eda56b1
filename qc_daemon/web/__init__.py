"""The node's HTTP server: health, JSON API (and later pages and metrics)."""
