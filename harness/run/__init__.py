"""Running: the training loop, one run in its own process, campaigns, executors, scaling, tuning."""
