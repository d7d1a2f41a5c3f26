"""The operator's window on the Kubernetes API: a thin JSON client that says what a failed
call means (api), and shared, label-selected watches kept in memory (informer)."""
