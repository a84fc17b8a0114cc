"""Run configurations: every file in configs/ loads and validates (no data needed), the ``base:``
chain and its deep merge, and the type checks that name the field at fault."""
from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml

from lightmark.core.config import Config, Head, config_from_dict, load_config, to_dict
from lightmark.core.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))


def raw(path: Path) -> dict:
    """A config file's own mapping, as written (its ``base:`` key included)."""
    data = yaml.safe_load(path.read_text()) or {}
    assert isinstance(data, dict), path
    return data


def merged(base: dict, over: dict) -> dict:
    """The merge the loader promises, written out independently: mappings merge key by key, any
    other value (lists included) replaces the base's."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def same_as_base(over: dict, base: dict, where: str = "") -> list[str]:
    """Leaves of ``over`` whose value equals the base's (redundant keys)."""
    out = []
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            out += same_as_base(v, base[k], f"{where}{k}.")
        elif k in base and base[k] == v:
            out.append(f"{where}{k}")
    return out


def test_there_are_configs() -> None:
    assert len(CONFIG_FILES) >= 5 and (CONFIGS / "default.yaml") in CONFIG_FILES


@pytest.mark.parametrize("path", CONFIG_FILES, ids=[p.name for p in CONFIG_FILES])
def test_every_config_loads_and_validates(path: Path) -> None:
    cfg = load_config(path)  # type-checks every value and runs validate_config
    assert isinstance(cfg, Config)
    assert cfg.train_data, f"{path.name}: no train_data"
    assert cfg.name and cfg.out_dir


@pytest.mark.parametrize("path", CONFIG_FILES, ids=[p.name for p in CONFIG_FILES])
def test_every_base_chain_resolves_and_merges(path: Path) -> None:
    """The chain of ``base:`` files ends (no loop) at a file without one, each link a file in
    configs/; the loaded config is its base's with this file's keys merged over, and each key the
    file sets changes something (configs hold only their overrides)."""
    chain, p = [path], path
    while "base" in raw(p):
        base = raw(p)["base"]
        assert isinstance(base, str), f"{p.name}: base must be a file name"
        p = (p.parent / base).resolve()
        assert p.is_file(), f"{chain[-1].name}: base {base!r} does not exist"
        assert p.parent == CONFIGS.resolve(), f"{chain[-1].name}: base {base!r} is outside configs/"
        assert p not in [c.resolve() for c in chain], f"base chain loops: {[c.name for c in chain]} -> {p.name}"
        chain.append(p)
    assert len(chain) <= len(CONFIG_FILES)
    own = raw(path)
    base = own.pop("base", None)
    if base is None:
        return
    base_cfg = to_dict(load_config(path.parent / base))
    expected = config_from_dict(merged(base_cfg, own), "expected")
    assert to_dict(load_config(path)) == to_dict(expected)
    assert same_as_base(own, base_cfg) == [], f"{path.name} repeats its base's values"


def write(folder: Path, name: str, data: dict) -> Path:
    p = folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(data))
    return p


def test_base_deep_merge_keeps_siblings(tmp_path: Path) -> None:
    write(tmp_path, "root.yaml", {
        "name": "root", "train_data": [{"path": "a"}, {"path": "b", "weight": 2.0}],
        "model": {"width": 1.0, "input_size": 96, "head_channels": 32},
        "train": {"epochs": 5, "lr": 0.01, "seed": 3}})
    write(tmp_path, "mid.yaml", {"base": "root.yaml", "model": {"input_size": 112}})
    child = write(tmp_path, "sub/child.yaml", {
        "base": "../mid.yaml",  # relative to the file that names it
        "train": {"epochs": 7}, "train_data": [{"path": "c"}]})
    cfg = load_config(child)
    assert cfg.train.epochs == 7
    assert cfg.train.lr == 0.01 and cfg.train.seed == 3  # siblings of the overridden value kept
    assert cfg.model.input_size == 112  # from the middle of the chain
    assert cfg.model.width == 1.0 and cfg.model.head_channels == 32  # from its root
    assert cfg.name == "root"
    assert [s.path for s in cfg.train_data] == ["c"]  # a list is replaced, not merged
    assert load_config(tmp_path / "mid.yaml").train.epochs == 5  # the base itself is unchanged


def test_base_loops_and_missing_bases_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", {"base": "b.yaml", "train_data": [{"path": "x"}]})
    write(tmp_path, "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "a.yaml")
    write(tmp_path, "self.yaml", {"base": "self.yaml"})
    with pytest.raises(ConfigError, match="self.yaml: 'base' chain loops back"):
        load_config(tmp_path / "self.yaml")
    write(tmp_path, "orphan.yaml", {"base": "nowhere.yaml"})
    with pytest.raises(ConfigError, match="nowhere.yaml: no such config file"):
        load_config(tmp_path / "orphan.yaml")
    write(tmp_path, "listbase.yaml", {"base": ["a.yaml"]})
    with pytest.raises(ConfigError, match="'base' must be a file name"):
        load_config(tmp_path / "listbase.yaml")


def test_type_errors_name_the_field(tmp_path: Path) -> None:
    base = write(tmp_path, "ok.yaml", {"train_data": [{"path": "x"}]})
    assert load_config(base).train.epochs >= 1
    bad = write(tmp_path, "epochs.yaml", {"base": "ok.yaml", "train": {"epochs": "three"}})
    with pytest.raises(ConfigError, match=r"train\.epochs: expected an integer, got 'three'"):
        load_config(bad)
    bad = write(tmp_path, "head.yaml", {"base": "ok.yaml", "model": {"head": "foo"}})
    with pytest.raises(ConfigError, match=r"model\.head: must be one of") as e:
        load_config(bad)
    allowed = typing.get_args(Head)
    assert len(allowed) >= 2 and all(repr(h) in str(e.value) for h in allowed), str(e.value)
    assert "'foo'" in str(e.value)
    bad = write(tmp_path, "unknown.yaml", {"base": "ok.yaml", "train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"train: unknown key\(s\) \['epoch'\]"):
        load_config(bad)
    bad = write(tmp_path, "lr.yaml", {"base": "ok.yaml", "train": {"lr": True}})
    with pytest.raises(ConfigError, match=r"train\.lr: expected a finite number"):
        load_config(bad)
