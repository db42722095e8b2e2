"""Batch prediction: one output row per image file, resumable. Only flow.py imports Prefect, so
worker processes and Dask workers import the rest without it.

    flow      the Prefect flow: a task per shard, parts merged as they finish
    plan      one run planned (arguments, model, work folder, shards) and summed up
    sources   where the images are: a local folder or an fsspec URL, listed lazily
    shards    the work folder next to the output: part files, resume, merge
    score     decode, normalize and score files; a shard's part file
    pool      the worker processes that score shards for the thread task runner
    output    the prediction table and its files (.parquet, .csv, .jsonl), written atomically
"""
