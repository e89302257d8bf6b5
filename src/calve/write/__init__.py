"""Writing outputs exactly once: commits that carry the consumer's checkpoint, merges, maintenance.

consumer    Consumer: checkpoints stored in the target table, advanced in the output's own commit
merge       merge (upsert) that rewrites only the files holding a changed key
mor         merge-on-read: position delete files instead of rewritten files
compaction  fold small files into one per partition, as a replace snapshot change capture ignores
tables      target tables created from an output's schema; rows conformed to a table's schema
"""
