"""One tutorial lab in Keras, as the tutorial wrote it: run by compare.py inside the Keras environment.

Reads the split that compare.py wrote (uint8 NCHW arrays, so both sides train on the same images), builds
the lab's Sequential model, compiles it with the optimiser's name as the tutorial did ('sgd', 'adam':
Keras's defaults), fits with one-hot labels and validation every epoch, and prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np


def build(model: str, in_shape: tuple[int, int, int], classes: int):
    import keras
    from keras import layers

    height, width, channels = in_shape
    if model == "mlp":
        stack = [keras.Input((height * width * channels,)), layers.Dense(512, activation="relu")]
    elif model in ("cnn", "cnn-dropout"):
        stack = [keras.Input(in_shape), layers.Conv2D(32, 3, padding="same", activation="relu"),
                 layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(128, activation="relu")]
        stack += [layers.Dropout(0.3)] if model == "cnn-dropout" else []
    elif model == "cnn-deep":
        stack = [keras.Input(in_shape), layers.Conv2D(32, 3, padding="same", activation="relu"),
                 layers.Conv2D(64, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
                 layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dropout(0.3),
                 layers.Dense(64, activation="relu"), layers.Dropout(0.2)]
    else:
        raise SystemExit(f"keras_lab.py: no Keras version of model {model!r}")
    return keras.Sequential(stack + [layers.Dense(classes, activation="softmax")])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="the .npz that compare.py wrote")
    parser.add_argument("--model", required=True, help="a cnnlab model name: mlp, cnn, cnn-dropout, cnn-deep")
    parser.add_argument("--optimizer", required=True, help="a Keras optimiser name, used with its defaults")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    import keras

    keras.utils.set_random_seed(0)
    data = np.load(args.data)
    classes = int(data["classes"])

    def prepare(images: np.ndarray) -> np.ndarray:  # the tutorial's reshape and / 255, channels last
        images = images.transpose(0, 2, 3, 1).astype("float32") / 255
        return images.reshape(len(images), -1) if args.model == "mlp" else images

    x_train, x_val, x_test = (prepare(data[f"{part}_images"]) for part in ("train", "val", "test"))
    y_train, y_val, y_test = (keras.utils.to_categorical(data[f"{part}_labels"], classes)
                              for part in ("train", "val", "test"))
    model = build(args.model, data["train_images"].shape[2:] + data["train_images"].shape[1:2], classes)
    model.compile(optimizer=args.optimizer, loss="categorical_crossentropy", metrics=["accuracy"])

    seconds: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):  # after the epoch's validation, as cnnlab times it
            seconds.append(time.perf_counter() - self.started)

    history = model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                        validation_data=(x_val, y_val), callbacks=[Timer()], verbose=0)
    _, test_accuracy = model.evaluate(x_test, y_test, batch_size=1000, verbose=0)
    print(json.dumps({
        "epoch_seconds": seconds, "val_accuracy": history.history["val_accuracy"][-1],
        "test_accuracy": float(test_accuracy), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "versions": f"Keras {keras.__version__} on {keras.backend.backend()} {_backend_version()}",
    }))


def _backend_version() -> str:
    import keras

    backend = keras.backend.backend()
    module = __import__({"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend, backend))
    return getattr(module, "__version__", "")


if __name__ == "__main__":
    main()
