"""The training pipeline: download -> prepare -> train -> evaluate -> compare -> publish.

flow         the Prefect flow and its six tasks (nothing but calls and artifacts)
run          one run's bookkeeping: paths, stage timings, provenance, summary
run_config   flags, environment, TOML file and defaults -> the flow's parameters
download     MNIST from the Hub, a folder or a URL -> raw Parquet, validated and hashed
prepare      raw Parquet -> pixel and label arrays (.npy), pixel statistics
train        netcore's trainer in the run folder (checkpoints, history, progress)
evaluate     test metrics, probabilities and pictures
champion     against production: the comparison, the promotion decision and move; the skip check
publish      the accuracy gate, ONNX export, model card -> the registry's next version
"""
