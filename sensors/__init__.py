"""Schedules and sensors. They name assets, jobs and partitions by key, never import ih_assets."""
