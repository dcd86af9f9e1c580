"""Safe loading: bundles hold no pickle, and a tampered bundle is refused before any of it runs.

Each hostile model file here carries a live payload, a Lambda layer whose function creates a
marker file when it is executed; the tests prove that the payload works (Keras without safe
mode runs it) and that loading the bundle refuses it with a ``BundleError`` while the marker
never appears. Tampering that a checksum catches is tested with the checksum left as it was;
tampering by someone who can also rewrite ``metadata.json`` is tested with every checksum
recomputed, so only safe mode and the allow-list of model classes stand in the way.
(``tests/unit/test_detector.py`` covers an edited calibration and an extra file.)
"""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pandas as pd
import pytest

from models.bundle import BundleError, load_bundle
from pipeline.lifecycle.serving import SentinelPyfunc
from pipeline.storage import sha256_file
from tests.conftest import TrainedBundles

KINDS = ("ae", "vae", "pca")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"


@pytest.fixture(scope="module")
def frame(training_frame: pd.DataFrame) -> pd.DataFrame:
    return training_frame


@pytest.fixture(scope="module")
def bundles(trained_bundles: TrainedBundles) -> dict[str, Path]:
    """One saved bundle per model kind: the session's (only the files matter here). Shared:
    every test that changes one works on a copy (``copy_of``)."""
    return {kind: trained_bundles.folder(kind) for kind in KINDS}


def copy_of(src: Path, tmp_path: Path, name: str = "bundle") -> Path:
    return Path(shutil.copytree(src, tmp_path / name))


def recompute_checksums(folder: Path) -> None:
    """What an attacker who can write the whole folder does after editing a file."""
    meta = json.loads((folder / "metadata.json").read_text())
    meta["sha256"] = {
        p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.name != "metadata.json"
    }
    (folder / "metadata.json").write_text(json.dumps(meta))


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def rewrite_keras_config(path: Path, change) -> None:
    """Edit ``config.json`` inside a ``.keras`` zip, keeping the other members."""
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info.filename) for info in zf.infolist()}
    config = json.loads(members["config.json"])
    members["config.json"] = json.dumps(change(config)).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def marker_lambda(marker: Path) -> keras.layers.Lambda:
    """A Lambda layer whose function creates ``marker`` when it runs: the payload."""
    # The path is a constant inside the code object, which Keras serialises as bytecode.
    fn = eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]")
    return keras.layers.Lambda(fn, name="payload")


def save_lambda_model(path: Path, marker: Path, n_features: int) -> None:
    """A real Keras model with the payload layer, saved as ``.keras`` (building it runs the
    payload once, here, so the marker is removed afterwards)."""
    model = keras.Sequential([keras.Input((n_features,)), marker_lambda(marker)])
    model.save(path)
    marker.unlink(missing_ok=True)


def looks_like_pickle(data: bytes) -> bool:
    """A pickle of protocol 2 to 5 starts with PROTO and its number."""
    return len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5


def test_the_pickle_check_can_fail() -> None:
    for protocol in range(2, 6):
        assert looks_like_pickle(pickle.dumps({"a": [1]}, protocol=protocol))
    assert not looks_like_pickle(b'{"a": 1}')


# ----------------------------------------------------------------------------- no pickle
@pytest.mark.parametrize("kind", KINDS)
def test_bundle_files_hold_no_pickle_and_are_checksummed(
    kind: str, bundles: dict[str, Path]
) -> None:
    folder = bundles[kind]
    meta = json.loads((folder / "metadata.json").read_text())
    files = sorted(p for p in folder.iterdir())
    assert {p.name for p in files} == {*meta["sha256"], "metadata.json"}
    for path in files:
        data = path.read_bytes()
        assert not looks_like_pickle(data), path.name
        assert path.suffix in (".json", ".npz", ".keras"), path.name
        if path.name != "metadata.json":
            assert meta["sha256"][path.name] == sha256_file(path), path.name
        if path.suffix == ".json":
            json.loads(data)
        elif path.suffix == ".npz":
            with zipfile.ZipFile(path) as zf:
                for name in zf.namelist():
                    member = zf.read(name)
                    assert member.startswith(NPY_MAGIC), f"{path.name}:{name}"
                    assert not looks_like_pickle(member)
            with np.load(path, allow_pickle=False) as arrays:  # raises on object arrays
                for name in arrays.files:
                    assert not arrays[name].dtype.hasobject, f"{path.name}:{name}"
        else:
            with zipfile.ZipFile(path) as zf:
                assert set(zf.namelist()) == {"config.json", "metadata.json", "model.weights.h5"}
                for name in zf.namelist():
                    member = zf.read(name)
                    assert not looks_like_pickle(member), f"{path.name}:{name}"
                    if name.endswith(".json"):
                        json.loads(member)
                    else:
                        assert member.startswith(HDF5_MAGIC)
    again = load_bundle(folder)  # and the untouched bundle loads
    assert again.detector.kind == kind


# ------------------------------------------------------------- tampering a checksum catches
def _edit_features(folder: Path) -> None:
    edit_json(folder / "features.json", lambda s: s["blocks"][0].update(center=1e9))


def _edit_latent_model(folder: Path) -> None:
    edit_json(folder / "latent_model.json", lambda s: s["params"].update(latent_dim=3))


def _wrong_checksum(folder: Path) -> None:
    edit_json(folder / "metadata.json", lambda m: m["sha256"].update({"reference.npz": "0" * 64}))


def _subfolder(folder: Path) -> None:
    (folder / "assets").mkdir()
    (folder / "assets" / "x.py").write_text("print('hi')")


def _symlink(folder: Path) -> None:
    (folder / "link.json").symlink_to(folder / "features.json")


def _unlisted_model_file(folder: Path) -> None:
    """Remove the model file and its checksum: nothing left to compare would be 'consistent'."""
    (folder / "pca.npz").unlink()
    edit_json(folder / "metadata.json", lambda m: m["sha256"].pop("pca.npz"))


def _metadata_not_json(folder: Path) -> None:
    (folder / "metadata.json").write_bytes(pickle.dumps({"bundle_format": 1}))


TAMPERING = {
    "edited features.json": (_edit_features, "checksum"),
    "edited latent_model.json": (_edit_latent_model, "checksum"),
    "wrong checksum in metadata": (_wrong_checksum, "checksum"),
    "a sub-folder": (_subfolder, "unexpected"),
    "a symbolic link": (_symlink, "unexpected"),
    "model file and its checksum removed": (_unlisted_model_file, "no checksum for pca.npz"),
    "metadata.json is a pickle": (_metadata_not_json, "not readable JSON"),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_tampered_bundle_is_refused(case: str, bundles: dict[str, Path], tmp_path: Path) -> None:
    tamper, message = TAMPERING[case]
    folder = copy_of(bundles["pca"], tmp_path)
    tamper(folder)
    with pytest.raises(BundleError, match=message) as info:
        load_bundle(folder)
    assert "\n" not in str(info.value)


def test_model_file_swapped_from_another_bundle_is_refused(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    folder = copy_of(bundles["ae"], tmp_path)
    shutil.copyfile(bundles["vae"] / "model.keras", folder / "model.keras")
    with pytest.raises(BundleError, match="model.keras does not match its checksum"):
        load_bundle(folder)


# -------------------------------------- hostile model files, with every checksum recomputed
@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "payload-ran"


def _n_features(folder: Path) -> int:
    return json.loads((folder / "calibration.json").read_text())["n_features_in"]


def _lambda_model(folder: Path, marker: Path) -> None:
    """model.keras replaced by a real Keras model whose Lambda layer runs the payload."""
    save_lambda_model(folder / "model.keras", marker, _n_features(folder))


def _lambda_in_our_config(folder: Path, marker: Path) -> None:
    """Our own model class, with the serialised payload hidden in its config."""
    payload = keras.saving.serialize_keras_object(marker_lambda(marker))

    def change(config: dict) -> dict:
        config["config"]["dtype"] = payload["config"]["function"]
        return config

    rewrite_keras_config(folder / "model.keras", change)


def _function_reference(folder: Path, marker: Path) -> None:
    """A config that names a function of another module for Keras to import and call."""

    def change(config: dict) -> dict:
        config["config"]["dtype"] = {
            "module": "builtins",
            "class_name": "function",
            "config": "exec",
            "registered_name": "function",
        }
        return config

    rewrite_keras_config(folder / "model.keras", change)


class _OpensMarker:
    """Unpickling this calls ``open(marker, "w")``: a pickle payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def _pickle_member(folder: Path, marker: Path) -> None:
    """An extra member in the model zip: a pickle that creates the marker when unpickled."""
    evil = pickle.dumps(_OpensMarker(marker))
    with zipfile.ZipFile(folder / "model.keras", "a") as zf:
        zf.writestr("assets/state.pkl", evil)


def _other_kind(folder: Path, marker: Path) -> None:
    """latent_model.json and metadata say VAE; the file holds an autoencoder."""
    edit_json(folder / "latent_model.json", lambda s: s.update(kind="vae"))
    edit_json(folder / "metadata.json", lambda m: m.update(kind="vae"))


HOSTILE = {
    "Lambda model": (_lambda_model, "Sequential"),
    "Lambda in our model's config": (_lambda_in_our_config, "__lambda__"),
    "function reference": (_function_reference, "builtins.function"),
    "pickle inside model.keras": (_pickle_member, "unexpected member"),
    "another model class": (_other_kind, "expected VariationalAutoencoder"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_model_file_is_refused_even_with_valid_checksums(
    case: str, bundles: dict[str, Path], tmp_path: Path, marker: Path
) -> None:
    tamper, message = HOSTILE[case]
    folder = copy_of(bundles["ae"], tmp_path)
    tamper(folder, marker)
    recompute_checksums(folder)
    with pytest.raises(BundleError, match=message) as info:
        load_bundle(folder)
    assert "\n" not in str(info.value)
    assert not marker.exists(), "the payload ran"


def test_the_lambda_payload_is_live_and_keras_safe_mode_refuses_it_too(
    bundles: dict[str, Path], tmp_path: Path, marker: Path
) -> None:
    """The allow-list is not the only guard, and the payload above is real."""
    path = tmp_path / "evil.keras"
    save_lambda_model(path, marker, _n_features(bundles["ae"]))
    assert not marker.exists()
    with pytest.raises(ValueError, match="Lambda"):
        keras.saving.load_model(path, safe_mode=True, compile=False)
    assert not marker.exists()
    keras.saving.load_model(path, safe_mode=False, compile=False)  # what an unsafe loader does
    assert marker.exists(), (
        "the payload did not run without safe mode: the tests above prove nothing"
    )


def test_a_bundle_from_an_older_feature_schema_is_refused(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    folder = copy_of(bundles["pca"], tmp_path)
    edit_json(folder / "features.json", lambda s: s.update(schema_version=0))
    recompute_checksums(folder)
    with pytest.raises(BundleError, match="schema version 0.*retrain"):
        load_bundle(folder)


# ---------------------------------------------------------------------- MLflow pyfunc wrapper
def test_pyfunc_wrapper_loads_through_load_bundle(
    bundles: dict[str, Path], frame: pd.DataFrame, tmp_path: Path, marker: Path
) -> None:
    model = SentinelPyfunc()
    # MLflow hands load_context a PythonModelContext; its ``artifacts`` is all the wrapper reads.
    model.load_context(SimpleNamespace(artifacts={"bundle": str(bundles["pca"])}))
    out = model.predict(None, frame.head(5))
    assert len(out) == 5
    assert out["score"].between(0, 1).all()

    edited = copy_of(bundles["pca"], tmp_path, "edited")
    _edit_features(edited)
    with pytest.raises(BundleError, match="checksum"):
        SentinelPyfunc().load_context(SimpleNamespace(artifacts={"bundle": str(edited)}))

    hostile = copy_of(bundles["ae"], tmp_path, "hostile")
    _lambda_model(hostile, marker)
    recompute_checksums(hostile)
    with pytest.raises(BundleError, match="Sequential"):
        SentinelPyfunc().load_context(SimpleNamespace(artifacts={"bundle": str(hostile)}))
    assert not marker.exists()


def test_versions_logged_before_the_restructure_still_find_their_pyfunc() -> None:
    """Their logged model file says ``from pipeline.serving import SentinelPyfunc``."""
    from pipeline.lifecycle.serving import SentinelPyfunc
    from pipeline.serving import SentinelPyfunc as old_path

    assert old_path is SentinelPyfunc
