"""Recall: the channels (semantic, keyword, temporal, entity, speaker, session) fused into
one ranking."""
