"""The command line: each subcommand parses, makes one library call and prints.

Errors reach the user as one line on stderr: exit code 2 for a bad command or value, 1 for a failure,
130 for Ctrl-C; ``--debug`` shows the traceback instead. Under torchrun rank 0 alone prints results.
"""
from __future__ import annotations

import argparse
import errno
import gc
import re
import sys
from pathlib import Path

from .display import plain_console, stdout_gone
from .errors import CnnlabError, UsageError
from .recipes import RECIPE_FLAGS

FOLDER_FLAGS = ("size", "channels", "preprocess", "strict")  # only with --data


def _train(args: argparse.Namespace) -> int:
    from .recipes import FOLDER_RECIPE, get_recipe, with_overrides
    from .train import resume_run, train_folder, train_recipe

    if args.verbose and not args.quiet:
        from .threads import describe

        print(describe())
    if args.deterministic or any(item.partition("=")[0].strip() == "deterministic" for item in args.set):
        from .loop import use_deterministic_algorithms

        use_deterministic_algorithms()  # now: cuBLAS reads its workspace setting at the process's first product
    overrides = {field: getattr(args, field) for field in RECIPE_FLAGS if getattr(args, field) is not None}
    for item in args.set:
        field, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set label_smoothing=0.1")
        overrides[field.strip().replace("-", "_")] = value
    if args.resume:
        if args.recipe or args.data or args.from_run or set(overrides) - {"epochs"}:
            raise UsageError("--resume continues the run's own recipe and data: give no recipe name, no --data, "
                             "no --from and, of the recipe's fields, only --epochs (to train further)")
        return _show_run(resume_run(args.resume, epochs=args.epochs, data_dir=args.data_dir, verbose=not args.quiet))
    if args.data is None:
        if args.recipe is None:
            raise UsageError("name a recipe (`cnnlab recipes` lists them), --data FOLDER of your own images, "
                             "or --resume RUN_DIR")
        given = [f"--{flag}" for flag in FOLDER_FLAGS if getattr(args, flag) not in (None, False)]
        if given:
            raise UsageError(f"{', '.join(given)} only go with --data FOLDER")
    elif args.data_dir is not None:
        raise UsageError("--data-dir finds the tutorial's data sets; --data FOLDER already names your images")
    else:
        overrides["dataset"] = "folder"
    recipe = with_overrides(get_recipe(args.recipe) if args.recipe else FOLDER_RECIPE, overrides)
    if args.data is not None:
        return _show_run(train_folder(args.data, recipe, size=args.size, channels=args.channels,
                                      preprocess=args.preprocess, strict=args.strict, runs_dir=args.runs_dir,
                                      verbose=not args.quiet, tensorboard=args.tensorboard, from_run=args.from_run))
    return _show_run(train_recipe(recipe, data_dir=args.data_dir, runs_dir=args.runs_dir, verbose=not args.quiet,
                                  tensorboard=args.tensorboard, from_run=args.from_run))


def _show_run(run_dir: Path) -> int:
    """The run folder on stdout, the last line of `cnnlab train` (rank 0's alone under torchrun)."""
    from . import distributed

    if distributed.is_main():
        print(run_dir)
    return 0


def _size(text: str) -> tuple[int, int]:
    """``--size 32`` or ``--size 48x32`` (width × height) → (height, width)."""
    width, sep, height = text.lower().partition("x")
    try:
        size = (int(height if sep else width), int(width))  # '48x' is a typo, not 48×48
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N or WIDTHxHEIGHT, e.g. 32 or 48x32") from None
    if min(size) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: each side must be at least 2 pixels")
    return size


def _replaceable(figure: Path, force: bool) -> bool:
    """Whether a figure may be written at ``figure``; if not (a file of yours, named alike), one line says why."""
    from .files import check_replaceable

    try:
        check_replaceable(figure, force)
        return True
    except CnnlabError as error:
        print(f"cnnlab: error: {error}", file=sys.stderr)
        return False


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port from 0 to 65535 (0: any free one)")
    return port


def _data_dir(text: str) -> str:
    """--data-dir must name a folder: a mistyped one was passed over, and cnnlab went on to download (#22)."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: no such folder; name the folder that holds the data set's "
                                         "files, or leave --data-dir out to let cnnlab find or download them")
    return text


DEVICES = "auto, cpu, cuda, cuda:N or mps"


def _device(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r}: choose {DEVICES}")
    return text


def _printable(text: str) -> str:
    """``text`` on one line: a newline or other control character in a file name is shown escaped (\\n)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _finish(failed: int, total: int) -> int:
    """Exit code 1 when any file failed, after saying how many."""
    if failed:
        print(f"cnnlab: {failed} of {total} image(s) could not be used", file=sys.stderr)
    return 1 if failed else 0


def _inspect(args: argparse.Namespace) -> int:
    import numpy as np

    from . import plots
    from .files import check_replaceable
    from .images import inspect_image

    save_dir = _folder(args.save) if args.save and len(args.images) > 1 else None  # one image: PATH is the figure
    if args.save and save_dir is None:
        check_replaceable(args.save, args.force)  # before any work: a file cnnlab did not write stays
    taken: set[Path] = set()
    failed = 0
    for path in args.images:
        try:
            report = inspect_image(path)
        except CnnlabError as error:
            print(f"cnnlab: error: {error}", file=sys.stderr)
            failed += 1
            continue
        print(report.describe())
        if args.values:
            with np.printoptions(linewidth=160):
                print(report.array)
        if args.save:
            figure = plots.figure_path(save_dir, path, taken) if save_dir else args.save
            if save_dir and not _replaceable(figure, args.force):
                failed += 1
                continue
            plots.plot_image(report.shown, f"{Path(path).name}: {report.size[0]}×{report.size[1]}, "
                                           f"mode {report.mode}", figure)
    return _finish(failed, len(args.images))


def _folder(path: Path) -> Path:
    from .files import make_folder

    try:
        make_folder(path)
    except OSError as error:
        raise CnnlabError(f"{path}: cannot make this folder ({error.strerror or error}); choose another") from None
    return path


def _predict(args: argparse.Namespace) -> int:
    import json

    from .device import resolve_device
    from .prediction import predict_files, random_test_predictions
    from .runs import load_run

    if args.save:
        from . import plots  # matplotlib only where figures are drawn
    if bool(args.images) == (args.random is not None):
        raise UsageError("give IMAGE files or --random N (random test images), one or the other")
    if args.top < 1 or (args.random is not None and args.random < 1):
        raise UsageError(f"--{'top' if args.top < 1 else 'random'} must be at least 1")
    run = load_run(args.run_dir)
    classes = run.info.classes
    device = resolve_device(args.device)
    if args.random is not None:
        picked, predicted = random_test_predictions(run, args.random, args.data_dir, device, args.seed)
        for label, guess in zip(picked.labels.tolist(), predicted.tolist()):
            print(json.dumps({"label": label, "class": guess, "correct": label == guess}) if args.json else
                  f"Label value = [{label}]  Predicted value = [{guess}]")
        figure = _folder(args.save) / "random-predictions.png" if args.save else None
        if figure is not None:
            if not _replaceable(figure, args.force):
                return 1
            plots.plot_predictions(picked.images, picked.labels.tolist(), predicted.tolist(), classes, figure)
        return 0
    save_dir = _folder(args.save) if args.save else None
    taken: set[Path] = set()
    failed = 0
    for item in predict_files(run, args.images, device):
        failed += item.error is not None
        if args.json:
            print(json.dumps(item.to_json(classes, args.top)), flush=True)
        elif item.error is not None:
            print(f"cnnlab: error: {_printable(item.error)}", file=sys.stderr, flush=True)
        else:
            print(_printable(item.describe(classes, args.top)), flush=True)
        if save_dir and item.image is not None and item.probabilities is not None:
            figure = plots.figure_path(save_dir, item.path, taken)
            if not _replaceable(figure, args.force):
                failed += 1
                continue
            _, label, probability = item.top(classes, 1)[0]
            plots.plot_probabilities(item.image, item.probabilities, classes,
                                     f"{Path(item.path).name}: {label} ({probability:.1%})", figure)
    return _finish(failed, len(args.images))


def _export(args: argparse.Namespace) -> int:
    from .export import TOLERANCE, export_onnx, parse_batch

    export = export_onnx(args.run_dir, args.output, parse_batch(args.batch), args.force)
    print(f"Wrote {export.path} ({export.size / 1e6:.1f} MB)")
    print(f"onnxruntime on {export.checked} random image{'s' * (export.checked != 1)}: largest difference from "
          f"cnnlab's probabilities "
          f"{export.max_difference:.1e} (at most {TOLERANCE:g})" if export.max_difference is not None else
          "onnxruntime is not installed: the file was not run (pip install 'cnnlab[export]')")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .serve import make_server

    with make_server(args.run_dir, args.host, args.port, args.device) as server:
        address, port = server.server_address[:2]
        host = address if isinstance(address, str) else bytes(address).decode()  # bytes only for AF_UNIX sockets
        _note_open(host, "this run's predictions; there is no authentication")
        print(f"Serving {args.run_dir} on http://{host}:{port} (GET /health, POST /predict); Ctrl-C stops",
              flush=True)
        server.serve_forever()
    return 0


def _note_open(host: str, what: str) -> None:
    """One line on stderr when the server can be reached from other machines."""
    from .serve import is_loopback

    if not is_loopback(host):
        print(f"note: listening on {host}, so other machines can reach {what} (leave out --host to stay on "
              "127.0.0.1)", file=sys.stderr)


def _studio(args: argparse.Namespace) -> int:
    try:
        from .studio import bind, create_app, serve_studio
    except ImportError as error:  # the extra is not installed
        raise CnnlabError(f"the studio needs {error.name}: pip install 'cnnlab[studio]'") from None

    folder, default = args.runs_dir, None
    if (folder / "recipe.json").is_file():  # one run folder: the studio opens on it, among its neighbours
        folder, default = folder.resolve().parent, folder.resolve().name
    app = create_app(folder, args.device, default, host=args.host)
    with bind(args.host, args.port) as sock:
        host, port = sock.getsockname()[:2]
        _note_open(host, "the studio and your runs; it answers only with the token in its address below")
        shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
        token = f"?token={app.state.token}" if app.state.token else ""
        print(f"Studio for {folder} on http://{shown}:{port}/{token} ; Ctrl-C stops", flush=True)
        serve_studio(app, sock)
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .recipes import RECIPES, get_recipe

    console = plain_console(highlight=False)
    if not console.is_terminal:  # piped or captured: no screen to fit, so never cut a name short
        console.width = 120
    if args.name:
        recipe = get_recipe(args.name).resolved()
        table = Table("field", "value", title=recipe.name, title_justify="left")
        for field, value in recipe.to_dict().items():
            table.add_row(field, str(value))
        console.print(table)
        return 0
    table = Table("recipe", "data", "model", "optimizer", "lr", "epochs", "batch", title_justify="left")
    for recipe in RECIPES.values():
        recipe = recipe.resolved()
        table.add_row(recipe.name, recipe.dataset, recipe.model, recipe.optimizer, f"{recipe.lr:g}",
                      str(recipe.epochs), str(recipe.batch_size))
    console.print(table)
    console.print("`cnnlab recipes NAME` shows every field of one recipe.")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import describe_confused, evaluate_run, format_scores

    try:
        evaluation, files = evaluate_run(args.run_dir, data_dir=args.data_dir, device=args.device)
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise CnnlabError(f"{error.filename}: cannot write there ({error.strerror}); evaluate writes into the run "
                          f"folder: copy it to a folder of your own (cp -r {args.run_dir} DIR) and evaluate the "
                          "copy") from None
    print(f"Test loss: {evaluation.loss:.4f} - test accuracy: {evaluation.accuracy:.4f}")
    plain_console(highlight=False).print(format_scores(evaluation))
    print("Most confused (true → predicted):", *describe_confused(evaluation) or ["none"], sep="\n  ")
    print(f"Wrote {len(files)} files to {files[0].parent}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from .explain import describe_stages, explain_run

    explanation = explain_run(args.run_dir, args.image, index=args.index, data_dir=args.data_dir, device=args.device)
    truth = f" (true: {explanation.label})" if explanation.label is not None else ""
    print(f"{explanation.source}: predicted {explanation.predicted} ({explanation.probability:.1%}){truth}")
    print(describe_stages(explanation))
    print(*explanation.notes, *explanation.files, sep="\n")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    print(write_report(args.run_dir, data_dir=args.data_dir, device=args.device))
    return 0


def _runs(args: argparse.Namespace) -> int:
    from .compare import compare_runs, format_differences, format_runs
    from .errors import warn
    from .runs import scan_runs

    console = plain_console(highlight=False)
    if not console.is_terminal:  # piped or captured: no screen to fit, so never cut a run's name short
        console.width = 200
    if args.items[:1] == ["compare"]:
        runs, differences, figure = compare_runs(args.items[1:], out=args.out, force=args.force)
        console.print(format_differences(runs, differences))
        print(figure)
        return 0
    if len(args.items) > 1:
        raise UsageError(f"runs {' '.join(args.items)}: give one folder to list, or `runs compare RUN RUN...`")
    folder = args.items[0] if args.items else "runs"
    runs, damaged = scan_runs(folder)
    console.print(format_runs(runs) if runs else f"no runs in {folder}")
    for _, message in damaged:
        warn(f"damaged: {message}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnlab", description="Train, evaluate and look inside image classifiers.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    # --debug after the command too; SUPPRESS keeps a subcommand from resetting one given before it
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for add in (_add_train, _add_run_commands, _add_folder_commands, _add_predict, _add_servers):
        add(commands, debug)
    return parser


def _add_train(commands: argparse._SubParsersAction, debug: argparse.ArgumentParser) -> None:
    """`cnnlab train`: a recipe or a folder of your own images into a run folder, or --resume one."""
    train = commands.add_parser("train", parents=[debug],
                                help="train a recipe, or a folder of your own images, into a new run folder")
    train.add_argument("recipe", nargs="?", help="a recipe name (see `cnnlab recipes`); optional with --data")
    train.add_argument("--data", type=Path, metavar="FOLDER",
                       help="your own images: one sub-folder per class, optionally inside train/, val/, test/")
    train.add_argument("--model", help="the network (see `cnnlab recipes`; default for --data: cnn-dropout)")
    train.add_argument("--size", type=_size, help="with --data: image size, N or WIDTHxHEIGHT (default: the most "
                                                  "common, at most 64 on the longer side)")
    train.add_argument("--channels", type=int, choices=(1, 3), help="with --data: 1 grey, 3 colour "
                                                                   "(default: grey if every image is)")
    train.add_argument("--preprocess",
                       help="with --data: digit (MNIST-style), grey-fit (Fashion-MNIST-style) or crop (default: the "
                            "recipe's, else crop)")
    train.add_argument("--strict", action="store_true", help="with --data: stop at an unreadable image "
                                                             "instead of skipping it")
    train.add_argument("--from", dest="from_run", type=Path, metavar="RUN_DIR",
                       help="start from a run you trained: its layers but the output layer, which is made new for "
                            "the classes (its network, image shape and preprocessing too); --set freeze_epochs=N "
                            "keeps them still for N epochs")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR",
                       help="continue an interrupted run from its last checkpoint (with --epochs: train further)")
    train.add_argument("--epochs", help="passes over the training split")
    train.add_argument("--batch-size", dest="batch_size", help="images per optimiser step")
    train.add_argument("--optimizer", help="sgd, adam, adamw, nadam, rmsprop or adagrad")
    train.add_argument("--lr", help="learning rate (default: the optimiser's Keras default)")
    train.add_argument("--seed", help="seed for weights, shuffling and dropout")
    train.add_argument("--val-fraction", dest="val_fraction", help="share of training images held out (0–1)")
    train.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    train.add_argument("--deterministic", action="store_const", const=True,
                       help="deterministic CUDA kernels (slower); CPU runs repeat exactly without it")
    train.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="replace any recipe field (repeatable)")
    train.add_argument("--data-dir", type=_data_dir,
                       help="folder holding the data set's files (else CNNLAB_DATA, the cache, /usr/share/datasets, "
                            "then download)")
    train.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    train.add_argument("--quiet", action="store_true", help="print only the run folder")
    train.add_argument("--verbose", action="store_true", help="also say what was chosen for this machine "
                                                              "(CPU threads, OpenMP's wait policy)")
    train.add_argument("--tensorboard", action="store_true", help="also log each epoch for TensorBoard under "
                                                                  "RUN_DIR/tensorboard (needs cnnlab[tensorboard])")
    train.set_defaults(func=_train)


def _add_run_commands(commands: argparse._SubParsersAction, debug: argparse.ArgumentParser) -> None:
    """`recipes`, and the commands that read one run folder and its test data: evaluate, explain, report."""
    recipes = commands.add_parser("recipes", parents=[debug], help="list the recipes, or show one in full")
    recipes.add_argument("name", nargs="?", help="a recipe to show field by field")
    recipes.set_defaults(func=_recipes)

    def run_command(name: str, func, summary: str) -> argparse.ArgumentParser:
        """A subcommand that reads one run folder and its test data."""
        command = commands.add_parser(name, parents=[debug], help=summary)
        command.add_argument("run_dir", type=Path, help="a run folder written by `cnnlab train`")
        command.add_argument("--data-dir", type=_data_dir,
                             help="folder holding the data set's files (for a --data run: the folder, if it has moved)")
        command.add_argument("--device", type=_device, default="auto", help=DEVICES)
        command.set_defaults(func=func)
        return command

    run_command("evaluate", _evaluate, "reload a run and evaluate it on its test set: per-class scores, "
                                       "confusion matrix, worst mistakes")
    explain = run_command("explain", _explain, "draw what a run's network sees: filters, feature maps and the "
                                               "pixels behind a prediction")
    explain.add_argument("image", nargs="?", type=Path, help="an image file (default: a test image, see --index)")
    explain.add_argument("--index", type=int, default=0, help="which test image, when no IMAGE is given (default 0)")
    run_command("report", _report, "write one self-contained HTML page about a run")


def _add_folder_commands(commands: argparse._SubParsersAction, debug: argparse.ArgumentParser) -> None:
    """`runs` (a folder of runs) and `inspect` (image files, lab 1)."""
    runs = commands.add_parser("runs", parents=[debug], help="list the runs in a folder, or `runs compare RUN RUN...`",
                               usage="cnnlab runs [DIR] | cnnlab runs compare RUN RUN... [--out PNG [--force]]")
    runs.add_argument("items", nargs="*", metavar="DIR | compare RUN...",
                      help="a folder of runs to list (default: runs), or 'compare' and two or more run folders")
    runs.add_argument("--out", type=Path, help="with compare: where the figure goes (default: compare.png "
                                               "beside the first run)")
    runs.add_argument("--force", action="store_true", help="with compare: replace --out even if cnnlab did not "
                                                           "write it")
    runs.set_defaults(func=_runs)

    inspect = commands.add_parser("inspect", parents=[debug],
                                  help="size, mode, array and network shapes of image files (lab 1)")
    inspect.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, BMP, GIF, WebP, TIFF…)")
    inspect.add_argument("--save", type=Path, metavar="PATH",
                         help="write a figure of the image to PATH (with several images: PATH is a folder)")
    inspect.add_argument("--values", action="store_true", help="print the array's values too")
    inspect.add_argument("--force", action="store_true", help="replace the --save file even if cnnlab did not "
                                                              "write it")
    inspect.set_defaults(func=_inspect)


def _add_predict(commands: argparse._SubParsersAction, debug: argparse.ArgumentParser) -> None:
    """`predict`: image files, or random test images, with a trained run."""
    predict = commands.add_parser("predict", parents=[debug], help="predict image files with a trained run")
    predict.add_argument("run_dir", type=Path, help="a run folder written by `cnnlab train`")
    predict.add_argument("images", nargs="*", metavar="IMAGE", help="image files; bad ones are reported and skipped")
    predict.add_argument("--top", type=int, default=3, metavar="K", help="classes shown per image (default: 3)")
    predict.add_argument("--json", action="store_true", help="one JSON object per line per image")
    predict.add_argument("--save", type=Path, metavar="DIR",
                         help="write a figure per image: the network's input beside its probabilities")
    predict.add_argument("--force", action="store_true", help="with --save: replace files in DIR even if cnnlab "
                                                              "did not write them")
    predict.add_argument("--random", type=int, metavar="N", help="predict N random test images instead (lab step 10)")
    predict.add_argument("--seed", type=int, help="with --random: which images (default: different each time)")
    predict.add_argument("--data-dir", type=_data_dir, help="with --random: folder holding the data set's files")
    predict.add_argument("--device", type=_device, default="auto", help=DEVICES)
    predict.set_defaults(func=_predict)


def _add_servers(commands: argparse._SubParsersAction, debug: argparse.ArgumentParser) -> None:
    """`export` (ONNX), `serve` (HTTP predictions) and `studio` (the local web app)."""
    export = commands.add_parser("export", parents=[debug], help="write a run's network as ONNX, preprocessing "
                                                                 "and softmax inside, then check it")
    export.add_argument("run_dir", type=Path, help="a run folder written by `cnnlab train`")
    export.add_argument("--format", choices=("onnx",), default="onnx",
                        help="the file format (onnx, the only one so far)")
    export.add_argument("--output", type=Path, metavar="PATH", help="where it goes (default: RUN_DIR/model.onnx)")
    export.add_argument("--batch", default="dynamic", metavar="dynamic|N",
                        help="images per call: any number (default), or fixed at N")
    export.add_argument("--force", action="store_true", help="replace --output even if cnnlab did not export it")
    export.set_defaults(func=_export)

    serve = commands.add_parser("serve", parents=[debug], help="answer predictions over HTTP (local use; "
                                                               "not hardened for the open internet)")
    serve.add_argument("run_dir", type=Path, help="a run folder written by `cnnlab train`")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this "
                                                           "machine only)")
    serve.add_argument("--port", type=_port, default=8000, help="port to listen on (default: 8000; 0: any free)")
    serve.add_argument("--device", type=_device, default="auto", help=DEVICES)
    serve.set_defaults(func=_serve)

    studio = commands.add_parser("studio", parents=[debug], help="a local web app: draw or drop an image, look "
                                                                 "inside every layer, follow your runs' curves")
    studio.add_argument("runs_dir", nargs="?", type=Path, default=Path("runs"),
                        help="a folder of runs, or one run folder (default: runs)")
    studio.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this "
                                                            "machine only)")
    studio.add_argument("--port", type=_port, default=8000, help="port to listen on (default: 8000; 0: any free)")
    studio.add_argument("--device", type=_device, default="cpu",
                        help="where the studio computes its predictions and layers: cpu (default), auto, cuda, cuda:N "
                             "or mps; Teach trains as `cnnlab train` does, on the GPU where there is one")
    studio.set_defaults(func=_studio)


def main(argv: list[str] | None = None) -> int:
    from . import errors

    errors.COMMAND_LINE = True  # advice names flags, not recipe fields (errors.hint)
    try:
        return _main(argv)
    finally:
        errors.COMMAND_LINE = False  # main called from Python (the tests, a notebook) hands Python back its terms


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its usage line
        return int(exit_.code or 0)
    try:
        return args.func(args)
    except KeyboardInterrupt as interrupt:
        return _fail(f"interrupted{f': {interrupt}' if str(interrupt) else ''}", 130)
    except BrokenPipeError:  # the reader went away (`cnnlab evaluate RUN | head`): stop quietly, as Unix tools do
        stdout_gone()
        return 1  # what rich's console does when the same happens to its output
    except Exception as error:
        if args.debug:
            raise
        if isinstance(error, CnnlabError):
            return _fail(f"error: {error}", 2 if isinstance(error, UsageError) else 1)
        if isinstance(error, OSError) and error.errno in OS_ADVICE:  # the file system said no: say what to do
            return _fail(f"error: {error.filename or error.filename2 or 'a file'}: {error.strerror}; "
                         f"{OS_ADVICE[error.errno]}", 1)
        # A fault no check foresaw (a bug): one line all the same, and how to see more.
        return _fail(f"error: {type(error).__name__}: {error} (--debug shows the traceback)", 1)


OS_ADVICE = {
    errno.EACCES: "check its permissions, or work on a copy in a folder of your own",
    errno.EPERM: "check its permissions, or work on a copy in a folder of your own",
    errno.EROFS: "that disk is read-only: work on a copy in a folder you can write",
    errno.ENOSPC: "the disk is full: free some space (or choose another folder) and run it again",
    errno.EDQUOT: "your disk quota is used up: free some space (or choose another folder) and run it again",
    errno.ENOTDIR: "cnnlab writes a folder of that name: move the file away (or work on a copy) and run it again",
}


def _fail(message: str, code: int) -> int:
    """One line on stderr. Under torchrun every process meets the same bad command or Ctrl-C, which rank 0
    alone reports; any other failure is reported by the process that meets it, naming its rank."""
    # Only `train` runs under torchrun, and it has loaded cnnlab.distributed before anything can fail; a command
    # that only reads JSON (`runs`, `recipes`) need not load PyTorch to print its error.
    distributed = sys.modules.get(f"{__package__}.distributed")
    rank = distributed.rank() if distributed else 0
    if rank and code in (2, 130):
        return code
    print(f"cnnlab{f' (rank {rank})' if rank else ''}: " + _printable(" ".join(message.splitlines())), file=sys.stderr)
    return code


def run() -> None:
    """The `cnnlab` command: ``main``, then an exit that leaves the process's objects to the operating system.

    At exit CPython's collector walks every object that PyTorch, matplotlib and their imports made, pass after
    pass as the modules are torn down: 0.7 s of a one-epoch `cnnlab train` on a 2-core AMD EPYC (0.85–1.02 s
    against 0.19 s frozen, 2026-12-04). Frozen, they are not walked; what cnnlab wrote is closed already, and
    objects that are not in a cycle are still freed as before. Not in ``main``, which the tests and notebooks call
    in a process that lives on.
    """
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
