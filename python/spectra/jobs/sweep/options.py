"""The options of ``spectra sweep``, declared once; the keys of its YAML file (and of ``kind:
sweep``) are the fields of :class:`spectra.jobs.sweep.run.SweepConfig`."""

from __future__ import annotations

from spectra.jobs.options import Option, attn_implementation_option, device_option, dtype_option

__all__ = ["OPTIONS"]

OPTIONS: tuple[Option, ...] = (
    Option(
        "config",
        help="YAML experiment file (see configs/): experiment scale_sweep | gain_map | qk_asymmetry, "
        "model, alphas, heads, ...",
        path="file",
        dest="config_path",
        required=True,
        key=False,
    ),
    Option(
        "out",
        help="Result folder (default: the config's out, else results/<experiment>).",
        path="dir",
        dest="out_dir",
        key=False,
    ),
    dtype_option(None, "Dtype of the model's weights (default: the config's dtype, else float32)."),
    device_option("Device for the model: cpu, cuda, cuda:N or mps (default: the config's device, else the CPU)."),
    attn_implementation_option(
        None, "Attention backend of the model (default: the config's, else sdpa; eager where refused)."
    ),
    Option(
        "resume",
        False,
        "Finish an interrupted run in the result folder, keeping its finished shards.",
        is_flag=True,
        key=False,
    ),
    Option("quiet", False, "No progress bar.", is_flag=True, key=False),
)
