"""The training loop: the optimiser, the loss, and ``fit`` — one loop, read top to bottom.

The whole training split lives on the device as uint8 and batches are taken by index, so no data loader,
worker process or host↔device copy sits inside an epoch. Metrics accumulate on the device and are read
once per epoch, as Keras reports them: the running mean over the epoch's batches for training, one pass
at the epoch's end for validation.
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from . import distributed, engines, threads
from .augment import Normalization, augment, check_translate
from .data import ArrayLike, Data, ImageSet, as_image_set, split
from .device import Device, autocast, choose_device
from .errors import CnnlabError, hint
from .history import EpochResult
from .inference import Inference, evaluate, loss_fn, to_input
from .models import check_classes, check_input, check_trainable
from .recipes import Recipe, as_recipe, for_data, with_overrides
from .schedule import WeightAverage, make_scheduler, param_groups


# ---------------------------------------------------------------------------------------------------------
# Optimisers, with Keras's defaults where the recipe leaves them open
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OptimizerKind:
    build: Callable[..., torch.optim.Optimizer]  # (parameters, recipe, **options of the fast engine)
    # (device type, first PyTorch version) where PyTorch has a fused kernel for it: one pass over the parameters a step
    fused: tuple[tuple[str, str], ...] = ()
    capturable: bool = False  # takes capturable=True, which a CUDA graph of its step needs


FUSED_SINCE_2_4 = (("cpu", "2.4"), ("cuda", "2.4"))  # every version cnnlab supports has these
# Keyed by cnnlab.recipes.OPTIMIZERS, which holds Keras's default learning rate for each.
OPTIMIZERS: dict[str, OptimizerKind] = {
    "sgd": OptimizerKind(lambda p, r, **o: torch.optim.SGD(p, lr=r.lr, momentum=r.momentum, nesterov=r.nesterov,
                                                           weight_decay=r.weight_decay, **o), fused=FUSED_SINCE_2_4),
    "adam": OptimizerKind(lambda p, r, **o: torch.optim.Adam(p, lr=r.lr, eps=r.eps, weight_decay=r.weight_decay, **o),
                          fused=FUSED_SINCE_2_4, capturable=True),
    "adamw": OptimizerKind(lambda p, r, **o: torch.optim.AdamW(p, lr=r.lr, eps=r.eps, weight_decay=r.weight_decay,
                                                               **o), fused=FUSED_SINCE_2_4, capturable=True),
    "nadam": OptimizerKind(lambda p, r, **o: torch.optim.NAdam(p, lr=r.lr, eps=r.eps, weight_decay=r.weight_decay,
                                                               **o), capturable=True),
    "rmsprop": OptimizerKind(lambda p, r, **o: torch.optim.RMSprop(p, lr=r.lr, alpha=0.9, eps=r.eps,
                                                                   momentum=r.momentum, weight_decay=r.weight_decay,
                                                                   **o), capturable=True),
    "adagrad": OptimizerKind(lambda p, r, **o: torch.optim.Adagrad(p, lr=r.lr, eps=r.eps, weight_decay=r.weight_decay,
                                                                   initial_accumulator_value=0.1, **o),
                             fused=(("cpu", "2.4"), ("cuda", "2.14"))),  # 2.11's docs: 'CPU only'; 2.14's: CUDA too
}


def make_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    recipe = recipe.resolved()
    _no_triton_without_gpu()
    kind = OPTIMIZERS[recipe.optimizer]
    device = next(model.parameters()).device
    assert recipe.lr is not None  # resolved() filled it in
    groups = param_groups(model, recipe.lr, recipe.weight_decay, recipe.norm_lr_scale)
    return kind.build(groups, recipe, **engines.optimizer_options(kind, recipe.engine, device.type))


def _no_triton_without_gpu() -> None:
    """Keep Triton out of a process on a machine without a GPU, where nothing can run its kernels.

    An optimiser's first call imports torch._dynamo (torch.optim wraps its methods in torch._disable_dynamo), and
    torch._dynamo imports Triton when it is installed, as it is beside PyTorch's CUDA wheels: libtriton.so then
    holds 100 MB of resident memory for nothing. Marked absent, PyTorch runs as its CPU wheel, which ships no
    Triton: the same kernels, the same numbers.
    """
    if "triton" not in sys.modules and not torch.cuda.is_available() and not torch.xpu.is_available():
        # `import triton` raises ImportError, as where it is not installed. The ignore: None in sys.modules is
        # Python's documented way to block an import, which typeshed's dict[str, ModuleType] leaves out.
        sys.modules["triton"] = None  # type: ignore[assignment]


def use_deterministic_algorithms() -> None:
    """Deterministic kernels from here on (slower on CUDA): the same recipe and seed then give the same history.

    Process-wide, as PyTorch's switch is. CPU kernels are deterministic already; this is for CUDA.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reads it when it starts
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


# ---------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------
class History(list):
    """What ``fit`` returns: a list of EpochResult, one per epoch, that shows itself in Jupyter as Keras's
    epoch table and the accuracy and loss curves."""

    def _repr_html_(self) -> str:
        from .display import history_html

        return history_html(self)

    @property
    def history(self) -> dict[str, list[float]]:
        """Keras's ``history.history``: each metric's values, one per epoch (``history.history['val_accuracy']``)."""
        return {name: [getattr(row, name) for row in self] for name in ("loss", "accuracy", "val_loss", "val_accuracy")}


@dataclass
class TrainState:
    """Everything ``fit`` needs to carry on where it stopped."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    shuffle: torch.Generator  # draws each epoch's order of the training images
    scheduler: torch.optim.lr_scheduler.LRScheduler  # the learning rate, stepped once per optimiser step
    augment: torch.Generator  # on the training device: draws each batch's flips and shifts
    scaler: torch.amp.GradScaler  # fp16's loss scale, which moves as training goes (a no-op without fp16)
    normalization: Normalization | None = None  # the training split's statistics, when the recipe normalises
    average: WeightAverage | None = None  # the weights that are validated, when the recipe averages them
    history: list[EpochResult] = field(default_factory=list)
    taken: tuple[str, ...] = ()  # parameters taken from another run that learn: frozen for recipe.freeze_epochs

    @property
    def epoch(self) -> int:  # epochs completed
        return len(self.history)

    @property
    def evaluated_model(self) -> nn.Module:
        return self.average.model if self.average is not None else self.model


def place(model: nn.Module, recipe: Recipe, device: torch.device) -> nn.Module:
    """The model on ``device``, in the memory layout the recipe and its engine ask for."""
    layout = engines.memory_format(model, device, recipe.engine, recipe.channels_last)
    # The ignore: Module.to takes a device and a memory_format together (torch._C._nn._parse_to), though its
    # typed overloads offer memory_format only alone.
    return model.to(device, memory_format=layout)  # type: ignore[call-overload]


def batch_bounds(n: int, batch_size: int, processes: int = 1) -> list[int]:
    """Where each batch of an epoch starts, then ``n``: the last batch is the remainder, as in Keras, except
    that a remainder too small to give each process two images (one process: a remainder of one) joins the
    batch before it, since BatchNorm cannot train on one image. Under torchrun these are the global batches,
    which the ``processes`` share out (``distributed.shard``)."""
    bounds = list(range(0, n, batch_size)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < 2 * processes:
        del bounds[-2]
    return bounds


@dataclass(frozen=True)
class Start:
    """A run that starts from another's trained layers (``cnnlab train --from RUN``): the layers taken, which
    ``recipe.freeze_epochs`` freezes at first, and RUN's input normalisation, which its layers were trained on."""

    layers: tuple[str, ...]  # module names, as model.named_modules() gives them
    normalization: Normalization | None


def start_state(model: nn.Module, recipe: Recipe, train: ImageSet, device: torch.device | str = "cpu",
                start: Start | None = None) -> TrainState:
    """A fresh run's state; a model that sets itself up from data (airbench's whitening) does so here, after
    deterministic kernels are switched on if the recipe asks. ``start``: the model holds layers taken from
    another run (cnnlab.transfer), which keep their weights and the input normalisation they were trained on.

    Under torchrun every process builds the same weights; each then draws its own augmentation and dropout,
    from ``recipe.seed`` plus its rank (rank 0 draws what one process would).
    """
    device = torch.device(device)
    # The batch and rate fit trains with (fit says so, if min_steps changed them)
    recipe, _ = for_data(recipe, len(train), distributed.world_size())
    recipe = engines.for_device(recipe, device, distributed.world_size())  # the graph engine's optimiser options
    if recipe.deterministic:  # before the first cuBLAS product (the whitening's, below), which fixes its workspace
        use_deterministic_algorithms()
    place(model, recipe, device)
    if start is not None:
        normalization = start.normalization
    else:
        normalization = Normalization.of(train.images) if recipe.normalize else None
        init_from_data = getattr(model, "init_from_data", None)
        if init_from_data is not None:  # from the first 5,000 training images, as airbench does
            init_from_data(to_input(train.images[:5000].to(device), normalization))
    optimizer = make_optimizer(recipe, model)  # before any freezing: every parameter that learns is in it
    total_steps = recipe.epochs * (len(batch_bounds(len(train), recipe.batch_size, distributed.world_size())) - 1)
    rank = distributed.rank()  # 0 in one process
    if rank:  # after the weights, which must be the same in every process
        torch.manual_seed(recipe.seed + rank)
    return TrainState(
        model, optimizer, torch.Generator().manual_seed(recipe.seed),
        scheduler=make_scheduler(optimizer, total_steps, recipe.schedule, recipe.warmup, recipe.lr_end),
        augment=torch.Generator(device).manual_seed(recipe.seed + rank),
        # fp16 has 5 exponent bits: a batch-mean loss's small gradients underflow to zero unless the loss is scaled
        # up for the backward pass (and the gradients back down before the step). A no-op for bf16 and fp32.
        scaler=torch.amp.GradScaler(device.type, enabled=recipe.autocast == "fp16"), normalization=normalization,
        average=WeightAverage(model, recipe.ema) if recipe.ema else None,
        taken=_learning_parameters(model, start.layers) if start is not None else ())


def _learning_parameters(model: nn.Module, layers: tuple[str, ...]) -> tuple[str, ...]:
    """The parameters of ``layers`` that learn as the model is built (airbench's whitening and norm scales never do)."""
    return tuple(f"{layer}.{name}" for layer in layers
                 for name, parameter in model.get_submodule(layer).named_parameters() if parameter.requires_grad)


def freeze(model: nn.Module, parameters: tuple[str, ...], frozen: bool) -> frozenset[str]:
    """Stop (or restart) ``parameters`` learning, after ``model.train()``: a frozen parameter gets no gradient,
    so no optimiser moves it (nor decays it, nor keeps moments for it), and a BatchNorm whose parameters are all
    frozen normalises by its running statistics and leaves them alone, as Keras's frozen BatchNormalization
    does. The names of those BatchNorms."""
    if not parameters:
        return frozenset()
    owned = dict(model.named_parameters())
    for name in parameters:
        owned[name].requires_grad_(not frozen)
    held = frozenset(name for name, module in model.named_modules() if frozen
                     and isinstance(module, nn.modules.batchnorm._BatchNorm) and list(module.parameters())
                     and not any(p.requires_grad for p in module.parameters()))
    for name in held:
        model.get_submodule(name).eval()
    return held


def fit(model: nn.Module, train: Data, val: Data | None, recipe: Recipe | str,
        device: Device = None, state: TrainState | None = None,
        on_epoch_end: Callable[[TrainState], None] | None = None, verbose: bool = True, *,
        validation_data: Data | None = None, validation_split: float | None = None,
        batch_size: int | None = None, epochs: int | None = None, **keras: Any) -> History:
    """Train ``model`` on ``train`` for ``recipe.epochs``, validating on ``val`` after every epoch.

    Keras's call works too: ``fit(model, x, y, recipe, batch_size=128, epochs=10, validation_data=(x_val, y_val))``
    or ``validation_split=0.2`` (the course's split, ``cnnlab.split``), with NumPy arrays as ``fit_data`` reads
    them. ``recipe`` may be a name; ``batch_size`` and ``epochs`` replace its fields. Keras's ``shuffle=True`` is
    what fit does; its other arguments (``KERAS_ONLY``) are refused in one line that says what to use instead.

    ``state`` resumes an earlier run; ``on_epoch_end`` sees the state after each epoch (to save it).
    ``recipe.engine`` picks how each step is computed (cnnlab.engines), never what. Returns the history, one row
    per epoch (a list that Jupyter shows as a table and curves). With weight averaging on, ``model`` ends
    holding the average, which is what was validated. A loss that turns NaN or infinite raises CnnlabError
    before ``on_epoch_end`` can see the broken weights; one that Keras's clipping keeps finite while the
    weights blow up prints a warning (``stall_warning``).

    ``device``: where to train (cnnlab.device); None: where the recipe says (``recipe.device``, 'auto' unless
    set). The model moves there and stays, in eval mode at the end, ready to predict.

    Under torchrun (cnnlab.distributed) each process runs its shard of every batch and DDP averages the
    gradients: the same steps as one process on the whole batch. Every process validates the whole split, so
    each holds the numbers one process would print; only rank 0 prints them.
    """
    _refuse_keras_only(keras)
    check_trainable(model)
    if on_epoch_end is not None and not callable(on_epoch_end):  # else it fails after the first epoch's work
        raise CnnlabError(f"on_epoch_end must be a function of the training state, not {type(on_epoch_end).__name__}"
                          ": pass one function, on_epoch_end=lambda state: ...")
    recipe = as_recipe(recipe)
    if batch_size is not None or epochs is not None:  # Keras's fit(batch_size=…, epochs=…)
        recipe = with_overrides(recipe, {k: v for k, v in (("batch_size", batch_size), ("epochs", epochs))
                                        if v is not None})
    train, val = fit_data(model, train, val, validation_data, validation_split, recipe.split_seed)
    device, processes = choose_device(device, otherwise=recipe.device), distributed.world_size()
    recipe = engines.for_device(recipe, device, processes)  # 'auto' engine and precision decided
    verbose = verbose and distributed.is_main()
    for part in (train, val):  # a model built for other images fails here, in one line, not inside PyTorch
        check_input(model, part.images.shape[1:])
    check_classes(model, train.images.shape[1:], len(train.classes))  # too few fail inside the loss, too many quietly
    if len(train) < 2 and any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules()):
        raise CnnlabError("the training data has 1 image, and BatchNorm cannot train on one (batch_bounds keeps "
                          "two in every batch): pass at least 2 training images")
    check_translate(recipe.translate, train.images.shape[1:])
    recipe, fitted = for_data(recipe, len(train), processes)  # batches small enough for min_steps
    if fitted and verbose:
        print(f"note: {fitted}")
    place(model, recipe, device)  # after the checks: data refused leaves the model where and as it was
    state = state or start_state(model, recipe, train, device)
    return _run_epochs(model, train, val, recipe, device, state, on_epoch_end, verbose)


# Keras's fit arguments that cnnlab's has not, and what to do instead
KERAS_ONLY = {
    "shuffle": "fit reshuffles the training images every epoch, drawn from the recipe's seed",
    "callbacks": "pass on_epoch_end=function, called with the training state after every epoch",
    "initial_epoch": "continue a run with cnnlab.resume_run(run_dir), or pass state= to fit",
    "class_weight": "every image weighs the same in cnnlab's loss",
    "sample_weight": "every image weighs the same in cnnlab's loss",
    "steps_per_epoch": "every epoch is one pass over the training images: pass fewer images, or set epochs",
    "validation_steps": "validation covers the whole validation set",
    "validation_batch_size": "validation takes batches as large as the device suits",
    "validation_freq": "fit validates after every epoch",
}


def _refuse_keras_only(given: dict[str, Any]) -> None:
    """A one-line CnnlabError for a Keras argument ``fit`` does not take (``shuffle=True`` is what it does), and
    Python's TypeError, as for any function, for a name that is not Keras's either."""
    for name, value in given.items():
        if name not in KERAS_ONLY:
            raise TypeError(f"fit() got an unexpected keyword argument {name!r}")
        if not (name == "shuffle" and value):
            raise CnnlabError(f"fit takes no {'shuffle=False' if name == 'shuffle' else name}: {KERAS_ONLY[name]}")


def _run_epochs(model: nn.Module, train: ImageSet, val: ImageSet, recipe: Recipe, device: torch.device,
                state: TrainState, on_epoch_end: Callable[[TrainState], None] | None, verbose: bool) -> History:
    """The loop itself, top to bottom: ``fit`` has checked the data and model, decided the engine and made the state.
    Each epoch: shuffle, one step per batch (schedule, thread share and a finiteness check between steps), then
    validation, one history row, the epoch's line and ``on_epoch_end``."""
    train_images = train.images.to(device)  # (N, C, H, W) uint8, resident for the whole run
    train_labels = train.labels.to(device)
    n, batch_size = len(train), recipe.batch_size
    bounds = batch_bounds(n, batch_size, distributed.world_size())
    steps = len(bounds) - 1
    check_every = 1 if device.type == "cpu" else 50  # a finiteness check waits for the device; on the CPU it is free
    forward = distributed.data_parallel(model, recipe, device)  # the model's forward, or the same sums fused; in DDP
    loss_sum = torch.zeros((), device=device)  # the epoch's sums stay on the device: no sync inside an epoch
    correct = torch.zeros((), device=device, dtype=torch.long)

    def train_step(batch: torch.Tensor) -> None:
        shard, share = distributed.shard(batch)  # this process's images of the batch (all of them in one process)
        images = augment(train_images[shard], recipe.flip, recipe.translate, state.augment)  # as-is when off
        labels = train_labels[shard]
        with autocast(device, recipe.autocast, graphed=recipe.engine == "graph"):
            logits = forward(to_input(images, state.normalization))
        loss = loss_fn(logits, labels, recipe)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss * share).backward()  # DDP averages the processes' gradients: the whole batch's mean
        state.scaler.step(state.optimizer)  # skipped, and the scale lowered, if fp16 overflowed
        state.scaler.update()
        if state.average is not None:
            state.average.update(model)  # on the device, with the decay of this step
        loss_sum.add_(loss.detach() * len(shard))  # Keras's running mean weighs each batch by its size
        correct.add_((logits.argmax(dim=1) == labels).sum())

    # One step for every engine; the graph engine replays it, reading the learning rate and the random draws from
    # device tensors that move on between replays.
    drawing = (state.augment,) if recipe.flip or recipe.translate else ()
    step_fn = (engines.cuda_graphed(train_step, batch_size, device, state.optimizer, drawing)
               if recipe.engine == "graph" else train_step)
    warning = stall_warning(state.history, recipe, len(train.classes))  # printed once: at the first stalled epoch
    with _progress(verbose) as progress, engines.settings(device, recipe.engine), \
            threads.FairShare(device.type, on_change=_giving_way(progress.console, verbose)) as share:
        for epoch in range(state.epoch + 1, recipe.epochs + 1):
            started = time.perf_counter()
            task = progress.add_task(f"Epoch {epoch}/{recipe.epochs}", total=steps)
            model.train()
            held = freeze(model, state.taken, frozen=epoch <= recipe.freeze_epochs)  # by the epoch alone: resumes alike
            order = torch.randperm(n, generator=state.shuffle).to(device)  # reshuffled every epoch
            loss_sum.zero_()
            correct.zero_()
            for step in range(steps):
                step_fn(order[bounds[step]:bounds[step + 1]])
                state.scheduler.step()  # the next step's rate, on the host: outside any captured step
                share.tick()  # fewer threads while other programs use the CPUs (a look once a second)
                if (step + 1) % check_every == 0 or step + 1 == steps:
                    _stop_if_diverged(loss_sum.item(), epoch, step + 1, steps, check_every)
                progress.advance(task)
            distributed.sum_over_processes(loss_sum, correct)  # the whole batches' sums, once an epoch

            if recipe.norm_stats:
                renew_norm_stats(state.evaluated_model, train_images[:recipe.norm_stats], recipe, device,
                                 state.normalization, keep=held)
            validation = evaluate(Inference(state.evaluated_model, state.normalization), val, recipe, device)
            _stop_if_diverged(validation["loss"], epoch)
            result = EpochResult(epoch, loss_sum.item() / n, correct.item() / n,
                                 validation["loss"], validation["accuracy"], time.perf_counter() - started)
            state.history.append(result)
            progress.remove_task(task)
            if on_epoch_end is not None:  # saved before its line: a closed pipe or a Ctrl-C there loses no epoch
                on_epoch_end(state)
            if verbose:
                progress.console.print(format_epoch(result, recipe.epochs, steps), soft_wrap=True)
                if warning is None and (warning := stall_warning(state.history, recipe, len(train.classes))):
                    progress.console.print(f"warning: {warning}", soft_wrap=True)
    freeze(model, state.taken, frozen=False)  # every layer learns again, for whatever the caller does next
    if state.average is not None:
        model.load_state_dict(state.average.model.state_dict())
    model.eval()  # ready to predict: dropout off, BatchNorm on its running statistics
    return History(state.history)


def fit_data(model: nn.Module, train: Data, val: Data | None, validation_data: Data | None = None,
             validation_split: float | None = None, seed: int = 9) -> tuple[ImageSet, ImageSet]:
    """``fit``'s training and validation sets, from cnnlab's ``(train, val)`` or Keras's ``(x, y)`` with
    ``validation_data`` or ``validation_split``, each read by ``as_image_set`` for ``model``'s input shape; the
    validation set has the training set's classes. One line for a call that says no validation, or two."""
    in_shape = getattr(model, "in_shape", None)
    keras = not isinstance(train, (ImageSet, tuple))  # fit(model, x, y, …): the second array is the labels
    labels = cast("ArrayLike | None", val) if keras else None
    train_set = as_image_set(train, labels, in_shape=in_shape, what="the training data")
    given = [v for v in (None if keras else val, validation_data, validation_split) if v is not None]
    if len(given) != 1:
        raise CnnlabError(f"fit was given {'no' if not given else len(given)} validation sets: pass one, "
                          "validation_data=(x_val, y_val) or validation_split=0.2" + ("" if keras else ", or val"))
    if validation_split is not None:
        return split(train_set, validation_split, seed)
    validation = validation_data if validation_data is not None else val
    assert validation is not None  # the one given, counted above
    val_set = as_image_set(validation, in_shape=in_shape, what="the validation data")
    if not isinstance(validation, ImageSet):  # arrays: their classes are the training data's
        if int(val_set.labels.max()) >= len(train_set.classes):
            raise CnnlabError(f"the validation data has label {int(val_set.labels.max())}, the training data's "
                              f"labels run 0–{len(train_set.classes) - 1}: pass labels one-hot, "
                              f"cnnlab.to_categorical(labels, classes), when the training data lacks the last classes")
        val_set = ImageSet(val_set.images, val_set.labels, train_set.classes)
    if val_set.classes != train_set.classes:
        raise CnnlabError(f"the validation data has {len(val_set.classes)} classes, the training data "
                          f"{len(train_set.classes)}: pass data of the same classes")
    return train_set, val_set


def renew_norm_stats(model: nn.Module, images: torch.Tensor, recipe: Recipe, device: torch.device,
                     normalization: Normalization | None, keep: frozenset[str] = frozenset()) -> None:
    """BatchNorm's running statistics replaced by those of ``images`` (uint8, un-augmented, as evaluation sees
    them) under the current weights: a plain average over batches, in train mode, without gradients. The
    BatchNorms named in ``keep`` (frozen ones) keep theirs."""
    norms = [module for name, module in model.named_modules()
             if isinstance(module, nn.modules.batchnorm._BatchNorm) and name not in keep]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # None: a cumulative average over the batches below
    model.train()
    for name in keep:
        model.get_submodule(name).eval()
    forward = engines.forward_fn(model, device, recipe.engine)
    with torch.no_grad(), autocast(device, recipe.autocast):
        for start in range(0, len(images), recipe.batch_size):
            forward(to_input(images[start:start + recipe.batch_size], normalization))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def _giving_way(console, verbose: bool) -> Callable[[int], None]:
    """The line training prints when it first gives CPUs to other programs (cnnlab.threads.FairShare)."""
    def say(count: int) -> None:
        if verbose:
            console.print(f"note: other programs are using the CPUs, so training goes on {count} "
                          f"thread{'s' * (count > 1)} while they do (cnnlab.threads; the last digits may differ "
                          "from a quiet run)", soft_wrap=True)
    return say


def _stop_if_diverged(loss: float, epoch: int, step: int = 0, steps: int = 0, every: int = 1) -> None:
    """Stop at a NaN or infinite loss, before the epoch's end can save the broken weights.

    ``loss`` is the epoch's running sum up to ``step`` (checked every ``every`` steps), which turns non-finite
    with the first batch that does; or, without a step, the validation loss.
    """
    if math.isfinite(loss):
        return
    first = (step - 1) // every * every + 1  # the first step since the last check
    where = (f"on the validation set after epoch {epoch}" if not step else
             f"in epoch {epoch} at step {step}/{steps}" if first == step else
             f"in epoch {epoch} between steps {first} and {step} of {steps}")
    lower = hint(cli="--lr", python="the recipe's lr")
    raise CnnlabError(f"the loss became {loss} {where}; training stopped: lower the learning rate ({lower})")


def stall_warning(history: list[EpochResult], recipe: Recipe, classes: int) -> str | None:
    """What to say about the first epoch of ``history`` where training has visibly broken down, or None.

    Two shapes: an epoch that ended at chance accuracy with the loss at the clipped cross-entropy's ceiling (the
    weights have blown up, yet Keras's clipping keeps the loss finite, so ``_stop_if_diverged`` never fires); and,
    clipped or not, validation accuracy fallen back to chance after an earlier epoch had clearly learned (airbench's
    rate on a small data set: mnist-fast on 7,196 digits, issue #18), where label smoothing keeps the loss finite
    and modest. Either way the run would end as if nothing happened."""
    at_chance = 1.5 / classes  # up to half again what guessing scores
    learned = None  # the first epoch that clearly learned: twice that, on validation
    for result in history:
        if recipe.loss_clip:
            ceiling = -math.log(recipe.loss_clip)  # the most one image can cost: -log(ε), 16.12 for Keras's 1e-7
            # A blown-up network is sure of one class and wrong on every other image, each at the ceiling; half of
            # that allows for the epoch's first steps, taken before the weights blew up. A network that is merely
            # untrained sits at log(classes), 2.3 for ten, far below.
            if result.accuracy <= at_chance and result.loss >= 0.5 * (1 - result.accuracy) * ceiling:
                return (f"epoch {result.epoch} ended at chance accuracy ({result.accuracy:.4f}, {classes} classes) "
                        f"with the loss at its clipping ceiling ({result.loss:.2f} of {ceiling:.2f}): the learning "
                        f"rate --lr {recipe.resolved().lr:g} is likely far too large")
        if learned is not None and result.val_accuracy <= at_chance:
            return (f"epoch {result.epoch} fell back to chance validation accuracy ({result.val_accuracy:.4f}, "
                    f"{classes} classes) after epoch {learned.epoch} reached {learned.val_accuracy:.4f}: the "
                    f"learning rate --lr {recipe.resolved().lr:g} is likely too large for this data")
        if learned is None and result.val_accuracy >= 2 * at_chance:
            learned = result
    return None


def format_epoch(result: EpochResult, epochs: int, steps: int) -> str:
    """One line per epoch in Keras's shape."""
    return (f"Epoch {result.epoch}/{epochs} - {steps}/{steps} - {result.seconds:.1f}s - "
            f"loss: {result.loss:.4f} - accuracy: {result.accuracy:.4f} - "
            f"val_loss: {result.val_loss:.4f} - val_accuracy: {result.val_accuracy:.4f}")


def _progress(verbose: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .display import plain_console

    # In Jupyter, plain text as a script prints it (cnnlab.display.plain_console): the epoch lines, no widget. A bar
    # only on a terminal: into a pipe or a file rich would leave an empty line where it stood.
    console = plain_console()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True, disable=not (verbose and console.is_terminal))
