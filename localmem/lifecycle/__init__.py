"""The memory lifecycle: tiers and the forgetting sweep, consolidation of duplicates and
contradictions, and session summaries."""
