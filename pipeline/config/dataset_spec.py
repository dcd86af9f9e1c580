"""What ``expectations/<dataset>/dataset.json`` may say: every key, its type, default and meaning.

The file is checked against ``DatasetSpec`` before any work: an unknown or misspelt key, at any
level, is refused (``extra="forbid"``) with one line that names the key and the file. The
``model`` section holds the detector's own parameters (``models.detector.LatentDetector``),
``model.model_params`` those of its latent model (``models``); a key left out keeps the
detector's default, so only the keys a file sets are passed on. ``expectations/
dataset.schema.json`` and the dataset part of ``docs/configuration.md`` are generated from
these models (``python -m pipeline.config.docs``).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import SentinelError


def _field(default: Any, description: str, *, shown_default: str | None = None, **kw: Any) -> Any:
    """A key with its default and meaning; ``shown_default`` when the docs must say more than
    the stored default (``None`` here meaning "the detector's default")."""
    extra = {"shown_default": shown_default} if shown_default else None
    return Field(default, description=description, json_schema_extra=extra, **kw)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Features(_Section):
    """Columns the model learns from, by kind (the id column is never one of them)."""

    numeric: list[str] = _field([], "Numbers (CSV text is parsed; a value that does not parse fails its row).")
    categorical: list[str] = _field([], "Categories: the frequent levels one-hot, the rest in one `__other__` bucket.")
    boolean: list[str] = _field([], "Booleans: true/false, 1/0 or text such as yes/no; missing counts as 0.5.")
    datetime: list[str] = _field([], "Timestamps: hour of day and day of week; one in the future fails its row.")


#: A space, a no-break space, a narrow no-break space between digit groups: ``csv.thousands``
#: names the one a file's fields use most, and the readers remove all three.
GROUP_SPACES = (" ", "\u00a0", "\u202f")


class CsvOptions(_Section):
    """How a CSV batch of this dataset is read (plain or `.gz`/`.bz2`/`.zst` compressed)."""

    delimiter: str = _field(",", "Field delimiter.", min_length=1, max_length=1)
    encoding: str = _field("utf8", "Text encoding, e.g. `utf8` or `latin-1`.", min_length=1)
    decimal: Literal[".", ","] = _field(
        ".", "Decimal mark of the numbers: `,` for files such as `3,14;2,72` (the delimiter is then not `,`)."
    )
    thousands: Literal["", ".", ",", " ", "\u00a0", "\u202f", "'"] = _field(
        "", "Digit-group separator of the numbers, removed before they are read: `.` for `1.234,56`, `,` for "
        "`1,234.56`, `'` for `1'234.56`, a space or a no-break space (`\\u00a0`, `\\u202f`, as French exports "
        "write `1 234,56`; any of the three is then removed); empty: none."
    )

    @model_validator(mode="after")
    def _marks_differ(self) -> CsvOptions:
        if self.decimal == self.delimiter:
            raise ValueError(f"csv.decimal and csv.delimiter are both {self.delimiter!r}; a number could not be told from two fields")
        # The same as the delimiter is fine: `1,234.56` in a comma-separated file is quoted, as
        # spreadsheets export it; the same as the decimal mark could not be read either way.
        if self.thousands and self.thousands == self.delimiter != ",":
            raise ValueError(f"csv.thousands and csv.delimiter are both {self.thousands!r}; only ',' may be both "
                             '(a comma-separated file quotes "1,234.56")')
        if self.thousands and self.thousands == self.decimal:
            raise ValueError(f"csv.thousands and csv.decimal are both {self.thousands!r}; `1{self.decimal}234` could "
                             "not be told from one and a bit")
        return self


class ModelParams(_Section):
    """The latent model's architecture and training (unset: chosen from the data's shape)."""

    latent_dim: int | None = _field(
        None, "Size of the latent space.", shown_default="from `latent_variance`, or the data's width", ge=1
    )
    hidden_dim: int | None = _field(
        None, "Width of the hidden layer (autoencoders).", shown_default="2 x features, 16..128", ge=1
    )
    epochs: int | None = _field(
        None, "Most training epochs; early stopping may end sooner.", shown_default="10..60, about 2,000 steps", ge=1
    )
    batch_size: int | None = _field(None, "Rows per gradient step.", shown_default="rows / 20, 16..256", ge=1)
    learning_rate: float | None = _field(None, "Adam's learning rate.", shown_default="0.001", gt=0)
    patience: int | None = _field(None, "Epochs without improvement before training stops.", shown_default="5", ge=1)
    validation_split: float | None = _field(
        None, "Share of the training rows early stopping watches.", shown_default="0.1", ge=0, lt=1
    )
    loss: str | None = _field(None, "Reconstruction loss, a Keras loss name such as `mae` or `mse`.", shown_default="mae")


class ModelSpec(_Section):
    """The detector (`LatentDetector`): which latent model, and how rows are scored."""

    kind: Literal["ae", "vae", "pca"] | None = _field(
        None, "Latent model: `ae` autoencoder, `vae` variational autoencoder (also samples "
        "synthetic records), `pca`.", shown_default="ae"
    )
    alert_rate: float | None = _field(
        None, "Overrides the dataset's `alert_rate` for the detector.", shown_default="the dataset's `alert_rate`",
        gt=0, lt=1,
    )
    threshold: float | None = _field(
        None, "Fixed score above which a row alerts, instead of one calibrated to `alert_rate`.",
        shown_default="calibrated",
    )
    n_neighbors: int | None = _field(None, "Neighbours in the latent space a row is compared with.", shown_default="5", ge=1)
    reference_size: int | None = _field(
        None, "Training rows kept as the latent reference (neighbours, drift).", shown_default="5000", ge=1
    )
    trim_fraction: float | None = _field(
        None, "Share of the worst-reconstructed training rows left out of the refit.", shown_default="0.05", ge=0, lt=1
    )
    latent_weight: float | None = _field(
        None, "Weight of the latent distance against the reconstruction error in the score.",
        shown_default="0.5", ge=0, le=1,
    )
    normalize_errors: bool | None = _field(
        None, "Scale each column's reconstruction error by its training spread.", shown_default="true"
    )
    latent_variance: float | None = _field(
        None, "Share of variance the latent space keeps when `model_params.latent_dim` is unset; "
        "`null` uses the shape-based default.", shown_default="0.7", gt=0, le=1,
    )
    random_state: int | None = _field(None, "Seed of the training.", shown_default="the training's seed")
    model_params: ModelParams | None = _field(None, "The latent model's architecture and training.")
    components: list[Literal["recon", "residual", "latent", "density", "tails", "combos", "duplicates"]] | None = _field(
        None, "Evidence the score combines: reconstruction error and residual (reconstruction family), "
        "latent k-NN distance and latent density (latent family), per-column marginal tails, category "
        "combinations never seen together, records repeated beyond chance.",
        shown_default="all seven",
    )
    combine: Literal["families", "fisher"] | None = _field(
        None, "`families`: mean evidence within a family, summed across families; `fisher`: the session-3 "
        "rule (bundles made before the families).", shown_default="families",
    )
    family_weights: dict[Literal["reconstruction", "latent", "marginal", "isolation", "combination", "duplicates"], float] | None = _field(
        None, "Weight of each family in the sum.", shown_default="1 each",
    )


class OutputSpec(_Section):
    """What the scored output keeps (`pipeline/score/schema.py`, `docs/alerts.md`)."""

    detail: Literal["lean", "full"] = _field(
        "lean", "`lean`: per row the id, `passthrough` columns, score, flag, signal, top features, "
        "nearest normal ids and segment; `full`: also every input column, the per-feature errors and "
        "the latent coordinates. Alerts always have the full detail. `--detail` and the DAG param "
        "`detail` override it.",
    )


class DriftLimits(_Section):
    """When a batch has drifted from the champion's training data (then: retrain)."""

    energy_ratio_limit: float = _field(
        3.0, "Largest latent energy distance from the training latents, as a multiple of its calibrated "
        "baseline (an unchanged batch reads about 1).", gt=0
    )
    recon_shift_limit: float = _field(
        1.5, "Largest median reconstruction error, as a multiple of the training median.", gt=0
    )
    min_rows: int = _field(
        50, "Fewest rows a batch needs for a drift verdict: a smaller one (a median of a few rows is "
        "noise) is never called drifted, so it is fine-tuned on or kept, not retrained on.", ge=1
    )


class Gate(_Section):
    """What a challenger must show before it becomes the champion."""

    auto_promote: bool = _field(True, "Promote a challenger that passes; `false`: wait for a reviewer.")
    recon_tolerance: float = _field(0.1, "Allowed rise of the holdout reconstruction ratio over the champion's.", ge=0)
    alert_rate_factor: float = _field(3.0, "Allowed factor between the holdout alert rate and `alert_rate`.", ge=1)
    auc_tolerance: float = _field(0.01, "Allowed drop of the ROC AUC on labelled rows.", ge=0)


class RegisterEvery(_Section):
    """When a routine fine-tune is due (a new version); between two, the champion is kept."""

    batches: int = _field(7, "A fine-tune is registered every this many batches (kept batches count).", ge=1)
    days: float | None = _field(
        None, "Also due once this many days passed since the last registered version.", gt=0
    )


class BatchAlertLimits(_Section):
    """When a batch is itself unusual: a batch alert, and it is not learned without review."""

    duplicate_share: float = _field(
        0.5, "Largest share of rows that repeat another row of the batch (the id aside).", gt=0, le=1
    )
    far_energy_ratio: float = _field(
        50.0, "Largest calibrated latent energy ratio from the champion's training data.", gt=0
    )


class Lifecycle(_Section):
    """How the champion is kept, fine-tuned or retrained as batches arrive."""

    update: Literal["fine-tune", "keep"] = _field(
        "fine-tune", "`fine-tune` the champion on each new batch, or `keep` it as it is."
    )
    window_batches: int = _field(7, "Recent validated batches a retrain learns from.", ge=0)
    exclude_score: float = _field(
        0.25, "Rows the champion scores at or above this are not learned from.", ge=0, le=1
    )
    drift: DriftLimits = _field(DriftLimits(), "Drift limits.")
    gate: Gate = _field(Gate(), "The promotion gate.")
    register_every: RegisterEvery = _field(RegisterEvery(), "How often a routine fine-tune is registered.")
    batch_alerts: BatchAlertLimits = _field(BatchAlertLimits(), "Batch alert limits.")


class DatasetSpec(_Section):
    """`dataset.json`: what a dataset looks like and how it is scored."""

    id_column: str = Field(description="Unique record id; never a feature.", min_length=1)
    timestamp_column: str | None = _field(None, "Event time column; a row more than `max_future_days` ahead fails.")
    features: Features = _field(Features(), "Feature columns by kind.")
    required: list[str] = _field([], "Columns a batch must have; a batch without one is quarantined whole.")
    passthrough: list[str] = _field([], "Columns copied to the scored output unchanged, not learned from.")
    max_bad_row_share: float = _field(
        0.2, "Largest share of rows that may fail the suite before the whole batch is rejected.", ge=0, le=1
    )
    alert_rate: float = _field(0.01, "Share of rows expected to alert; calibrates the threshold.", gt=0, lt=1)
    max_future_days: float = _field(1.0, "How far in the future a timestamp may lie, in days.", ge=0)
    timestamp_format: str | None = _field(
        None,
        "How text timestamps are written, as a `strftime` format: `%d/%m/%Y %H:%M` for `31/10/2026 13:05` "
        "(`init-dataset` sets it when the batch shows the form). Applies to `timestamp_column` and "
        "`features.datetime`; a value that matches neither it nor ISO 8601 fails its row.",
        shown_default="unset: each value read on its own (`05/10/2026` as May 10th)",
    )
    model: ModelSpec = _field(ModelSpec(), "The detector and its latent model.")
    registered_model_name: str | None = _field(
        None, "Name of the model in the MLflow registry.", shown_default="the dataset's name"
    )
    csv: CsvOptions = _field(CsvOptions(), "How CSV batches are read.")
    lifecycle: Lifecycle = _field(Lifecycle(), "Training, fine-tuning and promotion.")
    output: OutputSpec = _field(OutputSpec(), "What the scored output keeps.")

    @field_validator("timestamp_format")
    @classmethod
    def _format_reads_its_own_output(cls, fmt: str | None) -> str | None:
        if fmt is not None:
            check_timestamp_format(fmt)
        return fmt


def check_timestamp_format(fmt: str) -> None:
    """Refuse a ``strftime`` format that cannot read back a timestamp it writes (no directive,
    an unknown one, or one that loses the date)."""
    from datetime import datetime

    sample = datetime(2026, 10, 31, 13, 5, 9)
    try:
        back = datetime.strptime(sample.strftime(fmt), fmt)
    except ValueError as exc:
        raise ValueError(f"timestamp_format {fmt!r} cannot read the timestamps it describes ({exc})") from None
    if "%" not in fmt or back.date() != sample.date():
        raise ValueError(f"timestamp_format {fmt!r} does not give a date (e.g. %d/%m/%Y %H:%M)")


def parse_dataset_file(path: Path) -> DatasetSpec:
    """Read and check ``path``; any problem is one ``SentinelError`` line naming the file."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SentinelError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise SentinelError(f"{path} must hold a JSON object")
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        raise SentinelError(describe_error(exc, path)) from None


def describe_error(exc: ValidationError, path: Path) -> str:
    """The first problem of ``exc`` in one line: the key (dotted), what is wrong, the file."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if err["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys here: {', '.join(known)}"
        return f"{path}: unknown key {key!r}{hint}{more}"
    if err["type"] == "missing":
        return f"{path} lacks the required key {key!r}{more}"
    return f"{path}: key {key!r}: {err['msg']}, got {json.dumps(err.get('input'))[:60]}{more}"


def _known_keys(parents: list[str]) -> list[str]:
    """The keys allowed in the section at ``parents`` (list indices skipped)."""
    model: type[BaseModel] = DatasetSpec
    for name in parents:
        field = model.model_fields.get(name)
        sub = section_model(field.annotation) if field else None
        if sub is None:
            break
        model = sub
    return list(model.model_fields)


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The section model a field's annotation names (``Gate``, ``ModelParams | None``), if any."""
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
