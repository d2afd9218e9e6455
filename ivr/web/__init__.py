"""The IVR's HTTP side: the JSON API (and, later, the web console)."""
