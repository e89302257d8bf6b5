"""Reading tables at a pinned snapshot: file planning from manifests and reading the planned files.

planning    plan the data files of a snapshot that may match a filter, and read them to Arrow
"""
