"""Defaults of the write path that workflow files and settings also name (light: no pyiceberg)."""

DEFAULT_SMALL_FILE_BYTES = 32 << 20  # compaction: a data file smaller than this is small
DEFAULT_MIN_FILES = 4  # compaction: fold a partition's small files only when it has at least this many
