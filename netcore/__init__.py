"""netcore: a digit classifier written from scratch in NumPy, and its input contract.

Pure library (numpy, Pillow, pyarrow, safetensors; never Prefect, never flows). One idea per
module:

    config       NetworkConfig / TrainConfig dataclasses, saved as JSON next to the weights;
                 the named recipes (`recipe("mlp")`, `recipe("cnn")`)
    layers       dense, conv2d, maxpool2d, relu/tanh, flatten, dropout: forward and hand-written
                 backward each, built from the layer specs in a NetworkConfig
    network      a classifier composed of layers (the MLP by default, or a CNN): predict
    activations  hidden activations by name;  losses: softmax + cross-entropy by name
    optim        SGD with momentum / Nesterov and weight decay
    schedules    learning-rate schedules (constant, step, cosine with warmup, onecycle)
    augment      distorted copies (rotation, zoom, shear, stroke width) and random shifts
    trainer      the training loop, checkpoints and resume, early stopping
    parallel     each training batch split across threads (TrainConfig.threads)
    weights      model.safetensors + config.json, verified on load
    checkpoint   the training state as one safetensors file
    metrics      accuracy, confusion matrix, precision / recall
    mnist        the Hugging Face MNIST Parquet layout: validated, decoded to uint8 arrays
    images       any image file -> MNIST-style 28x28 pixels (decoding, normalization)
    png          the fast path for plain grayscale PNG; PNG headers
    preprocess   pixel scaling shared by training and inference
    io           atomic file writes (fsync, rename) and sha256 hashing
    errors       the exceptions with a one-line message for users

Quick start:

    from netcore import Network, NetworkConfig, TrainConfig, train
    net = Network(NetworkConfig(), np.random.default_rng(0))
    train(net, pixels, labels, TrainConfig(epochs=5))

    network_config, training = recipe("cnn")      # from netcore.config: the CNN and its training
    net = Network(network_config, np.random.default_rng(training.seed))
    train(net, pixels, labels, training)
"""

from netcore.config import NetworkConfig, TrainConfig
from netcore.errors import DataFileError, ModelFileError, NetcoreError, TrainingDiverged
from netcore.network import Network
from netcore.trainer import EpochStats, TrainResult, train
from netcore.weights import load_model, save_model

__all__ = [
    "DataFileError",
    "EpochStats",
    "ModelFileError",
    "NetcoreError",
    "Network",
    "NetworkConfig",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "load_model",
    "save_model",
    "train",
]
