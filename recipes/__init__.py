"""The Hydra configs (`config.yaml` and one folder per config group), installed as `mmkd.recipes`.

The launchers read them as `@hydra.main(config_path="pkg://mmkd.recipes")`, so an editable install
(this folder) and a wheel install (package data) find the same files.
"""
