"""Every setting of every service is documented in .env.example."""

import importlib
import pkgutil
import re
from pathlib import Path

from pydantic_settings import BaseSettings

import depthflow

ROOT = Path(__file__).resolve().parents[3]


def _settings_models() -> list[type[BaseSettings]]:
    for info in pkgutil.walk_packages(depthflow.__path__, "depthflow."):
        if info.name.endswith((".config", ".settings")):
            importlib.import_module(info.name)
    found, todo = [], list(BaseSettings.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("depthflow."):
            found.append(cls)
    return found


def test_every_setting_is_in_env_example():
    documented = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M)
    )
    missing = []
    for model in _settings_models():
        prefix = str(model.model_config.get("env_prefix", ""))
        for name, field in model.model_fields.items():
            if isinstance(field.default_factory, type) and issubclass(
                field.default_factory, BaseSettings
            ):
                continue  # a nested settings model, documented under its own prefix
            env = (prefix + name).upper()
            names = {env}
            alias = field.validation_alias
            if isinstance(alias, str):
                names.add(alias.upper())
            elif alias is not None and hasattr(alias, "choices"):
                names |= {c.upper() for c in alias.choices if isinstance(c, str)}
            if not names & documented:
                missing.append(f"{model.__module__}.{model.__name__}.{name} ({env})")
    assert not missing, "undocumented settings:\n" + "\n".join(missing)
    assert len(_settings_models()) >= 3
