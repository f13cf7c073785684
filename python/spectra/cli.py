"""The ``spectra`` command line.

Each job kind's options are declared once, in ``spectra.jobs.<kind>.options``; :func:`options`
turns them into click options. The jobs themselves (and torch) load when a command runs, through
the lazy modules below, so ``spectra --help`` and ``spectra <command> --help`` stay light.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import yaml

from spectra import __version__
from spectra.io.parsing import parse_ints, split_names
from spectra.jobs.capture.options import OPTIONS as CAPTURE_OPTIONS
from spectra.jobs.dynamics.options import OPTIONS as DYNAMICS_OPTIONS
from spectra.jobs.geometry.options import OPTIONS as GEOMETRY_OPTIONS
from spectra.jobs.options import (
    Option,
    attn_implementation_option,
    cli_options,
    device_option,
    dtype_option,
    special_tokens_option,
)
from spectra.jobs.plasticity.options import OPTIONS as PLASTICITY_OPTIONS
from spectra.jobs.profile.options import OPTIONS as PROFILE_OPTIONS
from spectra.jobs.sweep.options import OPTIONS as SWEEP_OPTIONS


class _Lazy(ModuleType):
    """A module imported on first attribute access: the one place where the command line defers
    its heavy imports (the jobs, torch) until a command runs."""

    def __init__(self, name: str) -> None:
        super().__init__(name)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attribute)


capture_job = _Lazy("spectra.jobs.capture.run")
demo_job = _Lazy("spectra.jobs.demo")
devices = _Lazy("spectra.models.devices")
dynamics_job = _Lazy("spectra.jobs.dynamics.run")
engine = _Lazy("spectra.engine")
examples = _Lazy("spectra.data.examples")
geometry_job = _Lazy("spectra.jobs.geometry.run")
head_stats = _Lazy("spectra.heads.stats")
info_module = _Lazy("spectra.info")
loading = _Lazy("spectra.models.loading")
plasticity_job = _Lazy("spectra.jobs.plasticity.run")
profile_job = _Lazy("spectra.jobs.profile.run")
report_html = _Lazy("spectra.report.html")
sweep_job = _Lazy("spectra.jobs.sweep.run")
taxonomy = _Lazy("spectra.heads.taxonomy")
windows_module = _Lazy("spectra.data.windows")


class DeviceType(click.ParamType):
    """A ``--device``: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a GPU index, checked against what this
    torch and machine have (``spectra.models.devices.check_device``), so ``--device cuda`` without
    CUDA is a usage error naming the allowed devices, like any other bad option; torch is imported
    only when the option is given."""

    name = "device"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None:
            return None
        text = str(value).strip()
        try:
            return str(devices.check_device(int(text) if text.isdigit() else text))
        except ValueError as error:
            self.fail(str(error), param, ctx)


DEVICE = DeviceType()


def _click_type(option: Option) -> Any:
    if option.name == "device":
        return DEVICE
    if option.choices is not None:
        return click.Choice(list(option.choices))
    if option.path is not None:
        return click.Path(file_okay=option.path != "dir", dir_okay=option.path != "file", exists=option.exists)
    if option.type is int and (option.min is not None or option.max is not None):
        return click.IntRange(option.min, option.max)
    if option.type is float and (option.min is not None or option.max is not None):
        return click.FloatRange(option.min, option.max, min_open=option.min_open)
    return option.type


def options(declared: Iterable[Option]) -> Callable[[Callable], Callable]:
    """The click options of the command line options among ``declared``, in their order.

    Example:
        >>> @click.command()
        ... @options([Option("threshold", 0.9, "Mass that k_eff must reach.", type=float)])
        ... def command(threshold): ...
        >>> [(p.opts, p.default, p.show_default) for p in command.params]
        [(['--threshold'], 0.9, True)]
    """
    decorators = []
    for option in cli_options(declared):
        flag = f"{option.long}/{option.secondary}" if option.secondary else option.long
        kwargs: dict[str, Any] = {"help": option.help}
        if option.is_flag:
            kwargs["is_flag"] = True
            if option.secondary:  # an on/off pair: its default is a choice to show
                kwargs["default"], kwargs["show_default"] = option.default, True
        else:
            if not (option.required or option.multiple):
                kwargs["default"] = option.default
            if option.shows_default:
                kwargs["show_default"] = True
            kind = _click_type(option)
            if kind is not None:
                kwargs["type"] = kind
        if option.required:
            kwargs["required"] = True
        if option.multiple:
            kwargs["multiple"] = True
        decorators.append(click.option(flag, option.param, **kwargs))

    def decorate(function: Callable) -> Callable:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="spectra", message="%(prog)s %(version)s")
@click.option(
    "--allow-download",
    is_flag=True,
    help="Let a hub id (org/name[@revision]) missing from the Hugging Face cache be downloaded "
    "(sets SPECTRA_ALLOW_DOWNLOAD=1; never while HF_HUB_OFFLINE=1). Off by default: no network.",
)
def main(allow_download: bool = False) -> None:
    """Mechanistic analysis of attention heads in HuggingFace transformers models."""
    if allow_download:  # read by spectra.models.zoo.references.resolve_model (Ray workers inherit it too)
        os.environ["SPECTRA_ALLOW_DOWNLOAD"] = "1"
    if warnings.formatwarning is not _format_warning:
        _format_warning.default = warnings.formatwarning  # type: ignore[attr-defined]
        warnings.formatwarning = _format_warning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Spectra's notices to the user (``load_model``'s attention fallback) as one stderr line
    (``spectra: ...``), without the file and source line Python's warnings add; any other warning as
    before."""
    if category.__name__ == "AttentionFallbackWarning":
        return f"spectra: {message}\n"
    return _format_warning.default(message, category, filename, lineno, line)  # type: ignore[attr-defined]


_format_warning.default = warnings.formatwarning  # type: ignore[attr-defined]


@main.command()
def info() -> None:
    """Versions, build flags, compiled backends and whether the native module loaded."""
    sys.exit(info_module.main())


@main.command()
@click.option(
    "--model",
    default="tiny-llama",
    show_default=True,
    help="Zoo name, a local model folder, or a hub id org/name[@revision] from the Hugging Face cache.",
)
@click.option("--context-length", default=256, show_default=True, type=click.IntRange(min=1), help="Tokens per window.")
@click.option("--n-samples", default=16, show_default=True, type=click.IntRange(min=1), help="Windows to profile.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1), help="Windows per shard.")
@click.option(
    "--out",
    "out_dir",
    default="results/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Result folder (a previous result folder there is replaced).",
)
@options([special_tokens_option(), dtype_option(), device_option(), attn_implementation_option()])
def demo(
    model: str,
    context_length: int,
    n_samples: int,
    batch_size: int,
    out_dir: str,
    add_special_tokens: bool,
    dtype: str,
    device: str | None,
    attn_implementation: str,
) -> None:
    """Profile a model on the zoo's held-out text into results/demo; print the figures and a per-layer summary."""
    try:
        demo_job.run_demo(
            model,
            context_length=context_length,
            n_samples=n_samples,
            batch_size=batch_size,
            out_dir=out_dir,
            add_special_tokens=add_special_tokens,
            dtype=dtype,
            device=device,
            attn_implementation=attn_implementation,
        )
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error


@main.command()
@options(CAPTURE_OPTIONS)
def capture(
    model_name,
    data_path,
    out_dir,
    layers,
    heads,
    kinds,
    stages,
    positions,
    bucket_size,
    seed,
    max_length,
    add_special_tokens,
    dtype,
    device,
    attn_implementation,
    overwrite,
) -> None:
    """Capture per-head Q/K/V of every example into Parquet (qk-sniffer layout) plus a JSON sidecar."""
    try:
        read = examples.read_examples(data_path)
        model, tokenizer = loading.load_model(
            model_name, dtype=dtype, device=device, attn_implementation=attn_implementation
        )
        if positions not in ("all", "uniform", "log_uniform"):
            positions = parse_ints(positions)
        meta = capture_job.run_capture(
            model,
            tokenizer,
            read,
            out_dir,
            max_length=max_length,
            add_special_tokens=add_special_tokens,
            overwrite=overwrite,
            layers=parse_ints(layers),
            heads=parse_ints(heads),
            capture=split_names(kinds),
            stage=split_names(stages),
            positions=positions,
            bucket_size=bucket_size,
            seed=seed,
        )
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        raise click.ClickException(str(error)) from error
    rows = sum(meta["rows"].values())
    click.echo(f"spectra capture: {meta['n_examples']} examples, {len(meta['rows'])} files, {rows} rows -> {out_dir}")


# ---- spectra profile ------------------------------------------------------------------------


def _option_keys(command: click.Command) -> dict[str, str]:
    """Every spelling a --config YAML may use for an option (``context-length``, ``context_length``,
    the parameter name) -> the parameter name."""
    keys = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name == "config":
            continue
        keys[param.name] = param.name
        for opt in param.opts:
            if opt.startswith("--"):
                keys[opt[2:]] = keys[opt[2:].replace("-", "_")] = param.name
    return keys


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--config run.yaml``: a mapping of option names to values that become the defaults."""
    if value is None:
        return None
    try:
        with open(value, encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle)
    except OSError as error:
        raise click.BadParameter(f"cannot read {value}: {error.strerror}", ctx, param) from None
    except yaml.YAMLError as error:
        raise click.BadParameter(f"{value} is not valid YAML ({error})", ctx, param) from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise click.BadParameter(f"{value} must hold a mapping of option names to values", ctx, param)
    keys = _option_keys(ctx.command)
    unknown = sorted(str(k) for k in loaded if str(k) not in keys)
    if unknown:
        allowed = sorted({k for k in keys if "_" not in k})
        raise click.BadParameter(
            f"{value}: unknown key(s) {', '.join(unknown)}; allowed keys are {', '.join(allowed)}", ctx, param
        )
    defaults = {}
    for key, item in loaded.items():
        if isinstance(item, (list, tuple)):
            item = ",".join(str(v) for v in item)
        defaults[keys[str(key)]] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


@main.command("profile")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help="YAML file of option defaults (keys as the long options, e.g. context-length: 256); flags override it.",
)
@options(PROFILE_OPTIONS)
def profile_command(
    model_name,
    data_path,
    context_length,
    n_samples,
    add_special_tokens,
    batch_size,
    out_dir,
    layers,
    heads,
    metrics,
    threshold,
    ignore_first,
    dtype,
    device,
    attn_implementation,
    resume,
    quiet,
) -> None:
    """Per-token attention metrics of a model on token windows, as Parquet shards, plus the head summary,
    the exp0 q-norm/entropy correlation tables and figures."""
    try:
        try:
            layer_list, head_list = parse_ints(layers), parse_ints(heads)
        except ValueError:
            raise ValueError(
                f"layers/heads: expected e.g. '0,2,5-7'; got --layers {layers!r} --heads {heads!r}"
            ) from None
        model, tokenizer = loading.load_model(
            model_name, dtype=dtype, device=device, attn_implementation=attn_implementation
        )
        windows = windows_module.load_windows(
            data_path, tokenizer, context_length, n_samples, add_special_tokens=add_special_tokens
        )
        result = profile_job.run_profile(
            model,
            tokenizer,
            windows,
            out_dir,
            model_name=model_name,
            batch_size=batch_size,
            layers=layer_list,
            heads=head_list,
            metrics=split_names(metrics),
            threshold=threshold,
            ignore_first=ignore_first,
            resume=resume,
            data=data_path,
            n_samples=n_samples,
            add_special_tokens=add_special_tokens,
            command_line=sys.argv,
            progress=not quiet,
        )
    except (ValueError, FileNotFoundError, KeyError) as error:
        raise click.ClickException(str(error).strip("'\"")) from error
    demo_job.print_result(result)


@main.command("sweep")
@options(SWEEP_OPTIONS)
def sweep_command(config_path, out_dir, dtype, device, attn_implementation, resume, quiet) -> None:
    """The seed's intervention experiments: scale sweeps (exp1), gain fits (exp2), the global gain map (exp2b) and
    Q-vs-K scaling (exp3, exp3b), as tables, summary.json and figures."""
    try:
        config = sweep_job.load_config(config_path)
        given = (("dtype", dtype), ("device", device), ("attn_implementation", attn_implementation))
        overrides = {k: v for k, v in given if v is not None}
        if overrides:  # --dtype / --device / --attn-implementation win over the config's keys
            config = dataclasses.replace(config, **overrides)
        result = sweep_job.run_sweep(config, out=out_dir, resume=resume, progress=not quiet, command_line=sys.argv)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as error:
        raise click.ClickException(str(error).strip("'\"")) from error
    sweep_job.print_sweep_result(result)


@main.command("dynamics")
@options(DYNAMICS_OPTIONS)
def dynamics_command(
    checkpoints,
    model_name,
    out_dir,
    context_length,
    n_samples,
    add_special_tokens,
    n_random,
    random_block,
    dtype,
    device,
    attn_implementation,
    gamma_heatmap,
    quiet,
) -> None:
    """Per-head statistics, classes and k_norm gain over training checkpoints: tables and figures."""
    if bool(checkpoints) == bool(model_name):
        raise click.UsageError("give either --checkpoints (one or more folders) or --model (e.g. tiny-qwen3)")
    try:
        result = dynamics_job.run_dynamics(
            model_name or list(checkpoints),
            out_dir,
            context_length=context_length,
            n_samples=n_samples,
            add_special_tokens=add_special_tokens,
            n_random=n_random,
            random_block=random_block,
            gamma_heatmap=gamma_heatmap,
            progress=not quiet,
            command_line=sys.argv,
            dtype=dtype,
            device=device,
            attn_implementation=attn_implementation,
        )
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error
    dynamics_job.print_dynamics_result(result)


@main.command("taxonomy")
@click.option(
    "--model",
    "model_name",
    default="tiny-qwen3",
    show_default=True,
    help="Zoo name, a local model folder, or a hub id org/name[@revision] from the Hugging Face cache.",
)
@click.option("--context-length", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--n-samples", default=8, show_default=True, type=click.IntRange(min=1), help="Held-out text windows.")
@click.option("--out", "out_csv", default=None, type=click.Path(dir_okay=False), help="Also write the table as CSV.")
@options([special_tokens_option(), dtype_option(), device_option(), attn_implementation_option()])
def taxonomy_command(
    model_name, context_length, n_samples, out_csv, add_special_tokens, dtype, device, attn_implementation
) -> None:
    """Classify every head (sink, induction, previous-token, positional, gatherer, retriever) and print the table."""
    try:
        model, tokenizer = loading.load_model(
            model_name, dtype=dtype, device=device, attn_implementation=attn_implementation
        )
        windows = windows_module.load_windows(
            None, tokenizer, context_length, n_samples, add_special_tokens=add_special_tokens
        )
        stats = head_stats.head_stats(model, windows)
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error
    table = taxonomy.classify(stats)
    columns = ["layer", "head", "class", "score", "margin", "runner_up", "k_norm_mean", "entropy_mean"]
    click.echo(table[columns].round(3).to_string(index=False))
    click.echo("\n" + ", ".join(f"{k}: {v}" for k, v in table["class"].value_counts().items()))
    if out_csv:
        table.to_csv(out_csv, index=False)


@main.command("geometry")
@options(GEOMETRY_OPTIONS)
def geometry_command(
    qk_dirs,
    model_name,
    checkpoints,
    n_examples,
    max_length,
    dtype,
    device,
    attn_implementation,
    out_dir,
    labels,
    n_components,
    axis_b,
    per_kind,
    max_rows,
    n_planes,
    active_threshold,
    hi,
    lo,
    gqa_group,
    scatter_head,
) -> None:
    """Combined Q+K PCA and the planar rotation model of every captured head: heads.csv, qk.csv, planes.csv,
    summary.json, figures; over a checkpoint series also series.csv and the training-dynamics figures."""
    if bool(qk_dirs) == bool(model_name):
        raise click.UsageError("give either --qk (one or more capture folders) or --model")
    if checkpoints and not model_name:
        raise click.UsageError("--checkpoints goes with --model")
    try:
        head = None
        if scatter_head is not None:
            try:
                layer_text, head_text = scatter_head.split(",")
                head = (int(layer_text), int(head_text))
            except ValueError:
                raise ValueError(f"scatter-head: expected LAYER,HEAD such as 2,5; got {scatter_head!r}") from None
        if model_name:
            qk_dirs = geometry_job.capture_model(
                model_name,
                Path(out_dir) / "qk",
                checkpoints=checkpoints,
                n_examples=n_examples,
                max_length=max_length,
                dtype=dtype,
                device=device,
                attn_implementation=attn_implementation,
            )
        run = geometry_job.run_geometry(
            qk_dirs,
            out_dir,
            labels=list(labels) or None,
            per_kind=per_kind,
            scatter_head=head,
            command_line=sys.argv,
            n_components=n_components,
            axis_b=axis_b,
            max_rows=max_rows,
            n_planes=n_planes,
            active_threshold=active_threshold,
            hi=hi,
            lo=lo,
            gqa_group=gqa_group,
        )
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error
    geometry_job.print_geometry_run(run, click.echo)


@main.command("plasticity")
@options(PLASTICITY_OPTIONS)
def plasticity_command(
    qk_dirs,
    model_name,
    checkpoints,
    n_examples,
    max_length,
    dtype,
    device,
    attn_implementation,
    out_dir,
    labels,
    mode,
    bucket_size,
    context_length,
    grid_width,
    query_position,
    covariance,
    pairs_per_cell,
    seed,
    heatmap_bin,
    max_tokens_per_head,
    normality_max_dims,
    gqa_group,
    scores,
    quiet,
) -> None:
    """Attention plasticity of every captured head: heads.csv, cells.csv, profile.csv, fractions.csv, heatmap.csv,
    components.csv, model_report.csv, figures; with several captures the comparison figures."""
    if bool(qk_dirs) == bool(model_name):
        raise click.UsageError("give either --qk (one or more capture folders) or --model")
    if checkpoints and not model_name:
        raise click.UsageError("--checkpoints goes with --model")
    try:
        if model_name:
            qk_dirs = plasticity_job.capture_model(
                model_name,
                Path(out_dir) / "qk",
                checkpoints=checkpoints,
                n_examples=n_examples,
                max_length=max_length,
                progress=not quiet,
                dtype=dtype,
                device=device,
                attn_implementation=attn_implementation,
            )
        run = plasticity_job.run_plasticity(
            qk_dirs,
            out_dir,
            mode=mode,
            labels=list(labels) or None,
            scores=scores,
            command_line=sys.argv,
            progress=not quiet,
            bucket_size=bucket_size,
            context_length=context_length,
            grid_width=grid_width,
            query_position=query_position,
            covariance=covariance,
            pairs_per_cell=pairs_per_cell,
            seed=seed,
            heatmap_bin=heatmap_bin,
            max_tokens_per_head=max_tokens_per_head,
            normality_max_dims=normality_max_dims,
            gqa_group=gqa_group,
        )
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error
    plasticity_job.print_plasticity_run(run, click.echo)


@main.command("report")
@click.argument("result_dir", type=click.Path())
@click.option(
    "--out",
    "out_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="HTML file to write (default: RESULT_DIR/report.html).",
)
@click.option(
    "--model",
    "model_name",
    default=None,
    help="Model for the attention viewer and the taxonomy classes (default: the one the result folder names).",
)
@click.option(
    "--no-model", is_flag=True, help="Do not load the model: no attention viewer, only the classes the folder holds."
)
@click.option(
    "--n-samples",
    default=2,
    show_default=True,
    type=click.IntRange(1, 3),
    help="Held-out windows in the attention viewer.",
)
@click.option(
    "--max-tokens",
    default=64,
    show_default=True,
    type=click.IntRange(2, 64),
    help="Tokens per window in the attention viewer.",
)
@options(
    [
        dtype_option(help="Dtype the model is loaded in for the attention viewer."),
        device_option(help="Device for the viewer's model: cpu, cuda, cuda:N or mps (default: the CPU)."),
        attn_implementation_option(help="Attention backend of the viewer's model (eager where sdpa is refused)."),
    ]
)
def report_command(
    result_dir, out_path, model_name, no_model, n_samples, max_tokens, dtype, device, attn_implementation
) -> None:
    """One self-contained HTML file summarising a result folder of any Spectra job: run metadata, a layer x head
    grid coloured by a per-head metric with each head's class, an attention viewer for the selected head, and the
    folder's figures."""
    try:
        path = report_html.write_report(
            result_dir,
            out_path,
            model=model_name,
            with_model=not no_model,
            n_samples=n_samples,
            max_tokens=max_tokens,
            dtype=dtype,
            device=device,
            attn_implementation=attn_implementation,
        )
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"spectra report: {path}")


# ---- spectra run ----------------------------------------------------------------------------


@main.command("run")
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(dir_okay=False))
@click.option(
    "--engine",
    "engine_name",
    default="local",
    show_default=True,
    type=click.Choice(["local", "ray"]),
    help="local: tasks one after the other in this process; ray: tasks on a Ray cluster.",
)
@click.option(
    "--address",
    default=None,
    help="With --engine ray: the cluster to join ('auto' for a running one); default: start a local one.",
)
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(min=1),
    help="With --engine ray: tasks running at once (and the CPUs of a local cluster); default: all CPUs.",
)
@click.option(
    "--max-retries",
    default=3,
    show_default=True,
    type=click.IntRange(min=0),
    help="With --engine ray: retries of a task whose worker died or that raised.",
)
@click.option(
    "--out",
    "out_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Result folder (default: the config's out).",
)
@options(
    [
        dtype_option(None, "Dtype of the models' weights (default: the config's dtype, else float32)."),
        device_option("Device for the models: cpu, cuda, cuda:N or mps (default: the config's device, else the CPU)."),
        attn_implementation_option(None, "Attention backend of the models (default: the config's, else sdpa)."),
    ]
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run_command(
    config_path, engine_name, address, workers, max_retries, out_dir, dtype, device, attn_implementation, quiet
) -> None:
    """A job from a YAML file (kind: profile | capture | sweep | dynamics | geometry | plasticity, models: [...],
    checkpoints: ..., out, and the kind's settings; examples in configs/runs/) split into tasks by (model or
    checkpoint, sample shard), each writing its own shard; a rerun skips the finished shards. The result folders
    are the same whatever the engine and worker count."""
    if engine_name == "local" and (address is not None or workers is not None):
        raise click.UsageError("--address and --workers go with --engine ray")
    try:
        config = engine.load_config(config_path)
        given = (("dtype", dtype), ("device", device), ("attn_implementation", attn_implementation))
        config.update({k: v for k, v in given if v is not None})  # win over the file
        chosen = engine.make_engine(engine_name, address=address, workers=workers, max_retries=max_retries)
        result = engine.run(config, chosen, out=out_dir, progress=not quiet, command_line=sys.argv)
    except (ValueError, FileNotFoundError, NotImplementedError, RuntimeError) as error:
        raise click.ClickException(str(error).strip("'\"")) from error
    report = result.report
    click.echo(
        f"spectra run ({report.engine}): {len(report.computed)} task(s) computed, {len(report.skipped)} "
        f"skipped (already done), {report.seconds:.1f} s -> {result.out}"
    )
    describe = engine.kind_module(result.kind).describe
    for label, item in result.results.items():
        click.echo(f"  {describe(label, item)}")
