"""The dynamic partitions of every per-pose stage: one shard of distinct poses each.

Kept in resources/ so that assets (ih_assets/) and checks (quality/) share one definition.
"""

from dagster import DynamicPartitionsDefinition

#: Name shared with sensors/ (which refer to it by name, not import).
POSE_SHARDS_NAME = "pose_shards"
pose_shards = DynamicPartitionsDefinition(name=POSE_SHARDS_NAME)
