"""What to run: the engine interface, the registry, workloads and their runs, tuning outcomes."""
