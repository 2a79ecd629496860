"""mmkd: an end-to-end multimodal pretraining research framework.

Builders make recipe data (webdataset shards + manifest), the trainer trains a vision-language model
on a recipe (a data mixture) under a fixed budget, and eval runs benchmarks and compares recipes.
The embedded "knowledge world" (`mmkd.world`) provides every source and benchmark offline.
"""

__version__ = "0.1.0"
