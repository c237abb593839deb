"""The family registry: names and import paths resolve to Family descriptors; configs and model directories
name their family; options a family lacks are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from discodiff.errors import ConfigError, ModelDirectoryError
from discodiff.pipeline_utils import (
    DEFAULT_FAMILY,
    Family,
    config_family,
    directory_family,
    load_pipeline,
    resolve_family,
)

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
NOT_A_FAMILY = "a plain string"


def test_builtin_family_resolves_lazily_to_its_parts():
    family = resolve_family("discodiff")
    assert family.name == "discodiff" and family.config_class().__name__ == "DiscoDiffConfig"
    assert family.pipeline_class().__name__ == "DiscoDiffPipeline" and callable(family.builder())


@pytest.mark.parametrize("name, needle", [
    ("diffusion", "unknown model family 'diffusion'; built-in families: discodiff"),
    ("no_such_module:FAMILY", "cannot import 'no_such_module:FAMILY'"),
    ("test_pipeline_utils:NOT_A_FAMILY", "is a str, not a discodiff.pipeline_utils.Family"),
    ("", "family must be a name"),
])
def test_bad_family_names_are_one_line_errors(name, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        resolve_family(name)


def test_a_config_names_its_family_and_defaults_to_discodiff(tmp_path):
    assert config_family(TINY_CONFIG).name == DEFAULT_FAMILY
    other = tmp_path / "other.yaml"
    other.write_text("family: autoregressive\n")
    with pytest.raises(ConfigError, match="unknown model family 'autoregressive'"):
        config_family(other)
    with pytest.raises(ConfigError, match="not found"):
        config_family(tmp_path / "missing.yaml")


def test_model_directories_name_their_family(tmp_path):
    from discodiff.build import build_pipeline
    from discodiff.config import DiscoDiffConfig

    model_dir = build_pipeline(DiscoDiffConfig.from_yaml(TINY_CONFIG)).save_pretrained(tmp_path / "model")
    manifest = json.loads((model_dir / "pipeline.json").read_text())
    assert manifest["family"] == "discodiff" and directory_family(model_dir).name == "discodiff"
    assert load_pipeline(model_dir).sample_rate == 44100
    with pytest.raises(ConfigError, match=r"--scheduler: not an option of the 'discodiff' family") as caught:
        load_pipeline(model_dir, scheduler="ddim")
    assert "its load options: --codec, --text-encoder" in str(caught.value)
    (model_dir / "pipeline.json").write_text(json.dumps({**manifest, "family": "nope"}))
    with pytest.raises(ModelDirectoryError, match="pipeline.json: unknown model family 'nope'"):
        directory_family(model_dir)
    with pytest.raises(ModelDirectoryError, match="no pipeline.json"):
        directory_family(tmp_path)


def test_check_options_names_flags_as_spelt():
    family = Family("toy", "m:C", "m:b", "m:P", sample_options=("duration_scale",))
    family.check_options({"duration_scale": 2.0, "num_inference_steps": None})  # None = not given
    with pytest.raises(ConfigError, match=r"--steps: not an option of the 'toy' family \(its sample options: --duration-scale\)"):
        family.check_options({"num_inference_steps": 3}, labels={"num_inference_steps": "--steps"})
    with pytest.raises(ConfigError, match="has no training task"):
        family.task_class()
