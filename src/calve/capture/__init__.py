"""Change capture, from snapshot metadata only: change sets, change ranges, changelog rows, ICDC tables.

changes     ChangeSet: what changed in a table between two snapshots, per snapshot operation
ranges      change ranges: min/max of a column over the changed files, from manifest bounds
changelog   the rows actually inserted and deleted (copy-on-write carry-over removed)
icdc        zero-copy ICDC tables: one snapshot referencing exactly the appended data files
"""
