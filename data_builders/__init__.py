"""Builders that turn sources into recipe data (webdataset shards + manifest).

Installed as `mmkd.data_builders` (see pyproject.toml for why it is not a top-level package).
"""
