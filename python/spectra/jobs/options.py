"""Options of the job kinds, declared once: each :class:`Option` is a ``spectra <kind>`` command
line option, a key of the kind's ``spectra run`` config, or both.

A kind's ``spectra.jobs.<kind>.options`` module holds its ``OPTIONS`` (and imports nothing heavy,
so ``spectra --help`` stays light). From them the command line builds the click options
(:mod:`spectra.cli`), the kind's engine module takes its ``KEYS`` (:func:`keys`), and the docs take
their options tables (:func:`table`).

Example:
    >>> opts = [Option("threshold", 0.9, "Mass that k_eff must reach.", type=float),
    ...         Option("n_permutations", 100, "Permutations.", cli=False),
    ...         Option("quiet", False, "No progress bar.", is_flag=True, key=False)]
    >>> keys(opts)
    {'threshold': 0.9, 'n_permutations': 100}
    >>> [o.long for o in cli_options(opts)]
    ['--threshold', '--quiet']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from spectra import defaults

__all__ = [
    "SAME",
    "Option",
    "attn_implementation_option",
    "cli_options",
    "device_option",
    "dtype_option",
    "keys",
    "special_tokens_option",
    "table",
]

SAME: Any = object()  # ``key_default``: the run-config default is the command line's


@dataclass(frozen=True)
class Option:
    """One option of a job kind.

    ``name`` is the run-config key (and the click parameter name unless ``dest`` names another);
    ``flag`` the long option (default ``--`` + ``name`` with ``-`` for ``_``). ``type`` is ``int``,
    ``float``, ``str`` or None (text); ``min``/``max``/``min_open`` make it a range, ``choices`` a
    choice, ``path`` (``"file"``, ``"dir"`` or ``"any"``) a path (``exists``: it must exist).
    ``cli``/``key``: whether it is a command line option and a run-config key; ``key_default`` the
    run-config default where it is not the command line's ``default``.
    """

    name: str
    default: Any = None
    help: str | None = None
    type: type | None = None
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    choices: Sequence[str] | None = None
    path: str | None = None
    exists: bool = False
    flag: str | None = None
    secondary: str | None = None
    dest: str | None = None
    required: bool = False
    is_flag: bool = False
    multiple: bool = False
    show_default: bool | None = None
    cli: bool = True
    key: bool = True
    key_default: Any = SAME

    @property
    def long(self) -> str:
        """The long option, e.g. ``--context-length``."""
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def param(self) -> str:
        """The click parameter name (the command function's argument)."""
        return self.dest or self.name

    @property
    def config_default(self) -> Any:
        """The default of the run-config key."""
        return self.default if self.key_default is SAME else self.key_default

    @property
    def shows_default(self) -> bool:
        """Whether ``--help`` shows the default (every option with a default but the flags, unless said)."""
        if self.show_default is not None:
            return self.show_default
        return self.default is not None and not self.is_flag and not self.multiple


def keys(options: Iterable[Option]) -> dict[str, Any]:
    """The run-config keys of ``options`` with their defaults (a kind's ``KEYS``)."""
    return {o.name: o.config_default for o in options if o.key}


def cli_options(options: Iterable[Option]) -> list[Option]:
    """The command line options among ``options``, in order."""
    return [o for o in options if o.cli]


def _default_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return f"`{value}`"


def table(options: Iterable[Option]) -> str:
    """A Markdown table of ``options``: option, run-config key, default, meaning (for the docs).

    Example:
        >>> print(table([Option("threshold", 0.9, "Mass that k_eff must reach.", type=float)]))
        | option | config key | default | meaning |
        |---|---|---|---|
        | `--threshold` | `threshold` | `0.9` | Mass that k_eff must reach. |
    """
    rows = ["| option | config key | default | meaning |", "|---|---|---|---|"]
    for o in options:
        flag = f"`{o.long}`" + (f" / `{o.secondary}`" if o.secondary else "") if o.cli else ""
        key = f"`{o.name}`" if o.key else ""
        if o.cli and o.key and o.key_default is not SAME and o.key_default != o.default:
            default = f"{_default_text(o.default) or 'none'} (config: {_default_text(o.key_default) or 'none'})"
        else:
            default = _default_text(o.default if o.cli else o.config_default)
        if o.required:
            default = "required" + (" (command line)" if o.key else "")
        meaning = (o.help or "").replace("|", "\\|").replace("*", "\\*")
        if o.choices:
            meaning = (meaning + " " if meaning else "") + "One of " + ", ".join(f"`{c}`" for c in o.choices) + "."
        rows.append(f"| {flag} | {key} | {default} | {meaning} |")
    return "\n".join(rows)


def dtype_option(default: str | None = defaults.DTYPE, help: str | None = None) -> Option:
    """``--dtype``: the dtype the model's weights are loaded in (every command that loads a model).

    Not a key of the kind's table: ``dtype`` is a key every ``spectra run`` kind accepts. A result's
    identity covers it through the model's: the ``weights_fingerprint`` hashes every weight's dtype
    and values, and ``meta.json`` records the model's dtype, so a bfloat16 run never resumes or merges
    with a float32 one."""
    return Option(
        "dtype",
        default,
        help or "Dtype of the model's weights (metrics, captures and statistics are float32/float64 whatever it is).",
        choices=defaults.DTYPES,
        key=False,
    )


def device_option(help: str | None = None) -> Option:
    """``--device``: the one device the model is placed on (every command that loads a model).

    Not a key of the kind's table: ``device`` is a key every ``spectra run`` kind accepts. It is
    deliberately left out of every ``run_hash``: where a model runs changes no setting of the
    analysis, only float rounding, so a run started on the CPU can be finished on a GPU."""
    return Option(
        "device",
        None,
        help or "Device for the model: cpu, cuda, cuda:N or mps (default: where it loads, the CPU).",
        key=False,
    )


def special_tokens_option(help: str | None = None) -> Option:
    """``--add-special-tokens/--no-add-special-tokens``: whether text is tokenised with the tokenizer's
    special tokens (a BOS first for a decoder that defines one, ``[CLS] … [SEP]`` for BERT-style
    encoders), on by default, as the model saw text in training; a key of the kinds that tokenise text.
    The choice is part of the run's identity (it changes the windows) and meta.json records it."""
    return Option(
        "add_special_tokens",
        True,
        help
        or "Add the tokenizer's special tokens to every text window (BOS for decoders, [CLS]/[SEP] for "
        "encoders), inside --context-length.",
        secondary="--no-add-special-tokens",
        is_flag=True,
    )


def attn_implementation_option(default: str | None = defaults.ATTN_IMPLEMENTATION, help: str | None = None) -> Option:
    """``--attn-implementation``: the attention backend the model is loaded with (every command that
    loads a model; one of ``spectra.defaults.ATTN_IMPLEMENTATIONS``).

    Not a key of the kind's table: ``attn_implementation`` is a key every ``spectra run`` kind accepts.
    A model whose architecture refuses the backend (Gemma2 with ``sdpa``) loads with ``eager`` and a
    one-line notice (``spectra.models.loading.load_model``); meta.json records the one used."""
    return Option(
        "attn_implementation",
        default,
        help or "Attention backend of the model (one that refuses sdpa, such as Gemma2, falls back to eager).",
        choices=defaults.ATTN_IMPLEMENTATIONS,
        key=False,
    )
