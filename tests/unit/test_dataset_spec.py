"""``dataset.json`` is checked against ``DatasetSpec``: a typo is one line naming key and file."""

from __future__ import annotations

import ast
import inspect
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline.adapters import cli
from pipeline.config.dataset import SentinelError, Settings, load_dataset
from pipeline.config.dataset_spec import DatasetSpec, ModelParams, ModelSpec, parse_dataset_file
from pipeline.demo.data import generate_purchases
from pipeline.ingest.profile import profile

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "expectations" / "retail_purchases" / "dataset.json"


def _write(tmp_path: Path, **changes: object) -> Path:
    cfg = json.loads(SHIPPED.read_text())
    cfg.update(changes)
    path = tmp_path / "shop" / "dataset.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg))
    return path


def test_the_shipped_dataset_is_valid() -> None:
    spec = parse_dataset_file(SHIPPED)
    assert spec.model.kind == "vae"
    assert "is_member" in spec.features.boolean


def test_a_profiled_dataset_is_valid() -> None:
    df, _ = generate_purchases(60, seed=1)
    config, _ = profile(df, "shop", "purchase_id")
    DatasetSpec.model_validate(json.loads(json.dumps(config)))


def test_the_id_column_may_be_named_as_the_file_writes_it() -> None:
    """``--id-column 'Purchase ID'`` (the file's header) is the normalised ``purchase_id``; a
    name that is no column either way is refused with the columns it could be."""
    df, _ = generate_purchases(60, seed=1)
    config, _ = profile(df, "shop", "Purchase ID")
    assert config["id_column"] == "purchase_id"
    with pytest.raises(SentinelError, match="'order' is not a column .*: purchase_id, customer_id"):
        profile(df, "shop", "order")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"alert_rat": 0.02}, "unknown key 'alert_rat'; did you mean 'alert_rate'?"),
        ({"model": {"kind": "vae", "epochs": 3}}, "unknown key 'model.epochs'; known keys here: kind,"),
        ({"model": {"model_params": {"epoch": 3}}}, "unknown key 'model.model_params.epoch'; did you mean 'epochs'?"),
        ({"features": {"numerics": ["x"]}}, "unknown key 'features.numerics'; did you mean 'numeric'?"),
        ({"lifecycle": {"gate": {"auto_promot": False}}}, "unknown key 'lifecycle.gate.auto_promot'"),
        ({"csv": {"sep": ";"}}, "unknown key 'csv.sep'"),
        ({"model": {"kind": "gan"}}, "key 'model.kind': Input should be 'ae', 'vae' or 'pca', got \"gan\""),
        ({"alert_rate": "high"}, "key 'alert_rate': Input should be a valid number"),
        ({"alert_rate": 1.5}, "key 'alert_rate': Input should be less than 1, got 1.5"),
    ],
)
def test_a_bad_key_is_one_line_naming_key_and_file(tmp_path: Path, changes: dict, message: str) -> None:
    path = _write(tmp_path, **changes)
    with pytest.raises(SentinelError) as info:
        parse_dataset_file(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(str(path))
    assert message in text


def test_a_missing_id_column_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path)
    cfg = json.loads(path.read_text())
    del cfg["id_column"]
    path.write_text(json.dumps(cfg))
    with pytest.raises(SentinelError, match="lacks the required key 'id_column'"):
        parse_dataset_file(path)


def test_only_the_keys_a_file_sets_reach_the_detector(settings: Settings, tmp_path: Path) -> None:
    _write(tmp_path, model={"kind": "vae", "latent_variance": None, "model_params": {"epochs": 12}},
           lifecycle={"gate": {"auto_promote": False}})
    s = Settings(home=settings.home, expectations_dir=tmp_path, tracking_uri=settings.tracking_uri,
                 landing_dir=settings.landing_dir)
    cfg = load_dataset(s, "shop")
    assert cfg.model == {"kind": "vae", "latent_variance": None, "model_params": {"epochs": 12}}
    assert cfg.lifecycle == {"gate": {"auto_promote": False}}
    assert cfg.csv == {"delimiter": ",", "encoding": "utf8", "decimal": ".", "thousands": ""}


def test_a_decimal_mark_equal_to_the_delimiter_is_refused_in_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, csv={"delimiter": ",", "decimal": ","})
    with pytest.raises(SentinelError, match="csv.decimal and csv.delimiter are both ','") as err:
        parse_dataset_file(path)
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize("csv", [{"delimiter": ";", "decimal": ",", "thousands": ","},
                                 {"delimiter": ";", "thousands": "."}])
def test_a_thousands_separator_equal_to_the_decimal_mark_is_refused_in_one_line(tmp_path: Path, csv: dict) -> None:
    with pytest.raises(SentinelError, match="csv.thousands and csv.decimal are both") as err:
        parse_dataset_file(_write(tmp_path, csv=csv))
    assert len(str(err.value).splitlines()) == 1


def test_a_thousands_separator_equal_to_the_delimiter_is_accepted(tmp_path: Path) -> None:
    """A US export: comma-separated, ``"1,234.56"`` quoted (what ``init-dataset`` writes for it)."""
    cfg = parse_dataset_file(_write(tmp_path, csv={"delimiter": ",", "thousands": ","}))
    assert cfg.csv.thousands == ","


def test_another_delimiter_as_the_thousands_separator_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SentinelError, match="only ',' may be both") as err:
        parse_dataset_file(_write(tmp_path, csv={"delimiter": " ", "thousands": " "}))
    assert len(str(err.value).splitlines()) == 1


def test_the_cli_refuses_a_misspelt_key_before_any_work(
    sentinel_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(SHIPPED.with_name("suite.json"), _write(tmp_path, max_bad_row_shares=0.5).with_name("suite.json"))
    sentinel_env.setenv("SENTINEL_EXPECTATIONS_DIR", str(tmp_path))
    batch = tmp_path / "day1.csv"
    pd.DataFrame({"purchase_id": ["a"]}).to_csv(batch, index=False)
    assert cli.main(["run", "--input", str(batch), "--dataset", "shop"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"error: {tmp_path / 'shop' / 'dataset.json'}: unknown key 'max_bad_row_shares'; "
                    "did you mean 'max_bad_row_share'?")
    assert not (tmp_path / "var" / "status").exists()


def test_the_model_section_has_the_detectors_parameters() -> None:
    from models.detector import LatentDetector

    params = inspect.signature(LatentDetector.__init__).parameters
    assert set(ModelSpec.model_fields) == set(params) - {"self"}
    for name, field in ModelSpec.model_fields.items():
        if name in ("alert_rate", "random_state"):  # the training sets these (train.py)
            continue
        shown = (field.json_schema_extra or {}).get("shown_default")
        default = params[name].default
        if isinstance(default, int | float | str) and not isinstance(default, bool):
            assert shown == str(default), name


def test_model_params_are_the_latent_models_arguments() -> None:
    tree = ast.parse((REPO / "models" / "keras_base.py").read_text(encoding="utf-8"))
    init = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "__init__"
                and "latent_dim" in {a.arg for a in n.args.args})
    arguments = {a.arg for a in init.args.args} - {"self", "random_state"}
    assert set(ModelParams.model_fields) == arguments
