"""Asset checks (Dagster + Great Expectations) calling the handsynth library."""
