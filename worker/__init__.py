"""kubevine.worker — a long-lived worker: registers its resources, stages inputs into a
cache, runs tasks in sandboxes, and reports results back to the manager."""
