"""How an output is written: the one list of write modes, shared by workflow files and `Consumer.commit`."""

from enum import StrEnum


class WriteMode(StrEnum):
    APPEND = "append"  # add the rows
    MERGE = "merge"  # upsert the rows on the output's keys (and delete keys flagged by delete_column)
    OVERWRITE = "overwrite"  # replace the rows matching the filter (default: all) with these rows
