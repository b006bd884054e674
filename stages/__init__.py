"""The DVC stages: thin scripts that read params.yaml, call tokbin and report."""
