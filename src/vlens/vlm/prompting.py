"""Versioned prompts: YAML data files in `vlens/vlm/prompts/`, loaded by `load_prompt(name)`.

A prompt file holds `name`, `version`, `schema` (a name from `vlens.vlm.schemas`),
`variables`, `system`, `user` and optional `max_tokens`. `{variable}` placeholders in `user`
are filled by `Prompt.render`; other braces (JSON examples) are left alone, which is why this
does not use `str.format`. The prompt version enters every generative backend's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from vlens.errors import ConfigError
from vlens.vlm.schemas import get_schema

PROMPT_DIR = Path(__file__).parent / "prompts"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_REQUIRED = ("name", "version", "schema", "system", "user")


@dataclass(frozen=True)
class Prompt:
    """One versioned prompt with its answer schema."""

    name: str
    version: int
    schema_name: str
    system: str
    user: str
    variables: tuple[str, ...] = ()
    max_tokens: int = 512
    source: str = field(default="", compare=False)

    @property
    def schema(self) -> type[BaseModel]:
        return get_schema(self.schema_name)

    @property
    def key(self) -> str:
        """`name@version`, the part of a fingerprint this prompt contributes."""
        return f"{self.name}@{self.version}"

    def render(self, variables: dict[str, Any] | None = None) -> tuple[str, str]:
        """(system, user) text with `{var}` filled and the answer's JSON schema appended."""
        variables = dict(variables or {})
        missing = [v for v in self.variables if v not in variables]
        if missing:
            raise ConfigError(f"prompt {self.key} needs variables {missing}")

        def fill(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in self.variables:
                return m.group(0)
            value = variables[name]
            if isinstance(value, list | tuple):
                value = ", ".join(str(v) for v in value)
            return str(value)

        user = _PLACEHOLDER.sub(fill, self.user)
        schema = json.dumps(self.schema.model_json_schema(), separators=(",", ":"))
        user += f"\nThe JSON must match this JSON schema: {schema}"
        return self.system, user


def load_prompt(name: str, prompt_dir: str | Path | None = None) -> Prompt:
    """Load prompt `name` from `prompt_dir` (default: the packaged prompts)."""
    path = Path(prompt_dir or PROMPT_DIR) / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_prompts(prompt_dir)) or "(none)"
        raise ConfigError(f"unknown prompt {name!r} in {path.parent}; known: {known}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"prompt file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"prompt file {path} must be a mapping")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ConfigError(f"prompt file {path} lacks {missing}")
    if data["name"] != name:
        raise ConfigError(f"prompt file {path} declares name {data['name']!r}, expected {name!r}")
    if not isinstance(data["version"], int) or isinstance(data["version"], bool):
        raise ConfigError(f"prompt file {path}: version must be an integer")
    get_schema(data["schema"])  # fail early on an unknown schema
    variables = tuple(data.get("variables") or ())
    return Prompt(
        name=name,
        version=data["version"],
        schema_name=data["schema"],
        system=str(data["system"]),
        user=str(data["user"]),
        variables=variables,
        max_tokens=int(data.get("max_tokens", 512)),
        source=str(path),
    )


def list_prompts(prompt_dir: str | Path | None = None) -> list[str]:
    """Names of the prompts in `prompt_dir` (default: the packaged prompts)."""
    return sorted(p.stem for p in Path(prompt_dir or PROMPT_DIR).glob("*.yaml"))


def prompt_set_key(prompt_dir: str | Path | None = None) -> str:
    """A short digest of every prompt's `name@version`: the prompt part of a fingerprint.

    Any version bump changes it, so cached answers from an older prompt are never reused.
    """
    keys = ",".join(load_prompt(n, prompt_dir).key for n in list_prompts(prompt_dir))
    return hashlib.sha256(keys.encode()).hexdigest()[:12]
