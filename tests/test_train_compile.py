"""``trainer.compile``: the network is compiled in place, its parameter names stay."""

from __future__ import annotations

from models.train import build_module, default_config, resolve_config


def _module(compile_model: bool):
    config = default_config("cmp")
    config["model"]["backbone"] = "resnet18"
    config["trainer"]["compile"] = compile_model
    return build_module(resolve_config(config))


def test_compile_option_compiles_the_network_in_place() -> None:
    plain, compiled = _module(False), _module(True)
    assert plain.model._compiled_call_impl is None
    assert compiled.model._compiled_call_impl is not None
    # Checkpoints and the exported backbone keep their keys (no "_orig_mod." prefix).
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert list(compiled.backbone.state_dict()) == list(plain.backbone.state_dict())
