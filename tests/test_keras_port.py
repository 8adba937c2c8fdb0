"""Lab 4 as a Keras user ports it: the course's own lines (LABS.md's common steps and lab 4's row), each Keras call
replaced by cnnlab's with the same arguments; only the imports, the loader's name and the model's construction
change. It runs on a slice of the real Fashion-MNIST for one epoch. Documentation too: docs/guide.md points here."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

import cnnlab  # was: from keras.datasets import fashion_mnist; from keras.models import Sequential; from keras.layers …
from helpers import FASHION_SYSTEM

pytestmark = [pytest.mark.slow,  # real data: 60,000 images parsed, one epoch on 2,400 (about 20 s here)
              pytest.mark.skipif(not (FASHION_SYSTEM / "train-images-idx3-ubyte.gz").exists(),
                                 reason=f"needs the real Fashion-MNIST in {FASHION_SYSTEM}")]


def to_categorical(labels: np.ndarray, classes: int) -> np.ndarray:  # was: from keras.utils import to_categorical
    return np.eye(classes, dtype=np.float32)[labels]


def test_lab_4_as_a_keras_user_writes_it(capsys):
    # 1. Load (was: fashion_mnist.load_data())
    (x_train, y_train), (x_test, y_test) = cnnlab.load_data("fashion-mnist", FASHION_SYSTEM, download=False)
    # 2. Split 80/20 (was: train_test_split(x_train, y_train, test_size=0.2, random_state=9))
    (x_train, y_train), (x_val, y_val) = cnnlab.split((x_train, y_train), val_fraction=0.2, seed=9)
    assert y_train[:10].tolist() == [3, 1, 2, 6, 7, 3, 5, 1, 1, 5]  # the course's first ten, LABS.md
    x_train, y_train, x_val, y_val, x_test, y_test = (  # the test's one addition: a slice, so one epoch takes seconds
        x_train[:3000], y_train[:3000], x_val[:600], y_val[:600], x_test[:1000], y_test[:1000])

    # 4. Reshape for the CNN and divide by 255; 5. one-hot
    x_train = x_train.reshape(-1, 28, 28, 1) / 255
    x_val = x_val.reshape(-1, 28, 28, 1) / 255
    x_test = x_test.reshape(-1, 28, 28, 1) / 255
    y_train, y_val, y_test = (to_categorical(y, 10) for y in (y_train, y_val, y_test))

    # 6. Build and summarise (was: Sequential([Conv2D(32, (3, 3), padding="same", activation="relu",
    #    input_shape=(28, 28, 1)), MaxPooling2D((2, 2)), Flatten(), Dense(128, "relu"), Dropout(0.3),
    #    Dense(10, "softmax")]))
    model = cnnlab.create_model("cnn-dropout", (28, 28, 1), 10)
    print(cnnlab.summarize(model))  # was: model.summary()
    # 7. Compile (was: model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"]))
    recipe = "fashion-cnn"

    # 8. Fit (was: history = model.fit(x_train, y_train, batch_size=128, epochs=10, validation_data=(x_val, y_val)))
    history = cnnlab.fit(model, x_train, y_train, recipe, batch_size=128, epochs=1, validation_data=(x_val, y_val))
    # 9. Evaluate (was: score = model.evaluate(x_test, y_test, verbose=0))
    score = cnnlab.evaluate(model, x_test, y_test, recipe, verbose=0)
    print("Test loss:", score[0])
    print("Test accuracy:", score[1])

    # 10. Three random test images (was: model.predict(x_test[i:i + 1]))
    for i in np.random.randint(0, len(x_test), 3):
        predicted = np.argmax(cnnlab.predict_proba(model, x_test[i:i + 1]), axis=1)
        print(f"Label value = {np.argmax(y_test[i:i + 1], axis=1)}  Predicted value = {predicted}")
    # 11. The curves read the history as Keras's
    val_accuracy = history.history["val_accuracy"]

    out = capsys.readouterr().out
    assert "Total params: 804,554" in out and "conv2d (Conv2d)" in out  # the course's parameter count
    assert "Epoch 1/1" in out and len(re.findall(r"^Label value = \[\d\]  Predicted value = \[\d\]$", out, re.M)) == 3
    assert len(val_accuracy) == 1 and 0.6 < val_accuracy[0] <= 1  # 2,400 images, 19 steps: well past chance (0.1)
    assert 0.6 < score[1] <= 1 and math.isfinite(score[0]) and 0 < score[0] < math.log(10)
