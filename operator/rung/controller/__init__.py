"""The Kubernetes operator: kopf handlers that run one Study loop per Study object."""
