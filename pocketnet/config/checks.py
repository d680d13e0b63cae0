"""Turn config mistakes into one clear message before Hydra starts the job.

The command-line overrides are composed with Hydra's compose API, sweeps reduced to one value
(every override grammar Hydra's sweepers accept: lists, ``range``, ``choice``, ``interval``,
``tag``, ``glob``); each further group option a sweep names is composed too. On failure the
error names the key or option at fault, lists what is valid there and suggests the closest
spelling, instead of a stack trace.
"""

from __future__ import annotations

import difflib
import re

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, IntervalSweep
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from pocketnet.config.compose import compose
from pocketnet.config.values import check_values

__all__ = ["ConfigError", "check_overrides"]


class ConfigError(ValueError):
    """A misspelt key, a wrong type or an unknown group option."""


def _jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs to compose for checking a command line: first, every sweep reduced to one value
    (the first of a list, range or choice, ``a=1,2`` -> ``a=1``; the start of an
    ``interval(...)``, tagged or not); then one job per further non-numeric value of a sweep
    (``head=arcface,cosfac`` checks both options before the first job runs). A ``glob(...)`` of
    group options is left to Hydra's sweeper."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    first: list[str] = []
    others: list[tuple[int, str]] = []
    for text, ov in zip(overrides, parsed, strict=True):
        if ov.is_hydra_override():
            continue
        key = ov.get_key_element()
        if ov.is_sweep_override():
            value = ov.value()
            if isinstance(value, Glob):
                continue
            if isinstance(value, IntervalSweep):
                values = [value.start]
            else:
                values = list(ov.sweep_string_iterator())
            values = [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
            others += [(len(first), f"{key}={v}") for v in values[1:] if not _numeric(v)]
            text = f"{key}={values[0]}"
        first.append(text)
    jobs = [first]
    for i, text in others:
        jobs.append(first[:i] + [text] + first[i + 1 :])
    return jobs


def _numeric(value: object) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def _node_keys(cfg: DictConfig, dotted: str) -> list[str] | None:
    node = OmegaConf.select(cfg, dotted) if dotted else cfg
    return [str(k) for k in node] if isinstance(node, DictConfig) else None


def _explain(err: Exception, overrides: list[str], config_name: str) -> str:
    causes = [err]
    while causes[-1].__cause__ is not None:
        causes.append(causes[-1].__cause__)
    omega = next((c for c in causes if isinstance(c, OmegaConfBaseException)), None)
    text = str(err)
    missing = re.search(
        r"Could not find '([^']+)'\n\nAvailable options in '([^']+)':\n(.*)", text, re.S
    )
    if missing:
        wanted, group = missing.group(1), missing.group(2)
        lines = missing.group(3).split("\n")
        options = [
            o.strip()
            for o in lines[
                : next((i for i, o in enumerate(lines) if o and not o[0].isspace()), len(lines))
            ]
            if o.strip()
        ]
        hint = difflib.get_close_matches(wanted.split("/")[-1], options, n=1)
        return (
            f"unknown option '{wanted.split('/')[-1]}' for config group '{group}'. "
            f"Valid: {', '.join(options)}." + (f" Did you mean '{hint[0]}'?" if hint else "")
        )
    if omega is not None and getattr(omega, "full_key", None):
        key = str(omega.full_key)
        parent, _, leaf = key.rpartition(".")
        msg = str(getattr(omega, "msg", omega)).split("\n")[0]
        if isinstance(omega, ConfigKeyError | ConfigAttributeError):  # an unknown key
            bad = next((o for o in overrides if o.lstrip("+~").split("=")[0] == key), None)
            rest = [o for o in overrides if o is not bad]
            try:
                keys = _node_keys(compose(rest, config_name), parent)
            except (HydraException, OmegaConfBaseException):
                keys = None
            where = f"'{parent}'" if parent else "the top level"
            out = f"unknown config key '{key}'."
            if keys:
                out += f" Valid keys in {where}: {', '.join(keys)}."
                hint = difflib.get_close_matches(leaf, keys, n=1)
                if hint:
                    out += f" Did you mean '{(parent + '.') if parent else ''}{hint[0]}'?"
            return out + " (Add a new key with '+key=value'.)"
        if isinstance(omega, MissingMandatoryValue):
            return f"config key '{key}' needs a value: add {key}=<value> to the command"
        return f"bad value for config key '{key}': {msg}"
    return text.strip()


def check_overrides(overrides: list[str], config_name: str = "config") -> None:
    """Compose the job's config (and each further option a sweep names); raise
    :class:`ConfigError` with an explanation if it fails."""
    try:
        jobs = _jobs(overrides)
    except HydraException as err:
        raise ConfigError(f"cannot parse the command-line overrides: {err}") from None
    for job in jobs:
        try:
            cfg = compose(job, config_name)
            OmegaConf.to_container(cfg, resolve=False, throw_on_missing=True)
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(_explain(err, job, config_name)) from None
        try:
            check_values(cfg)
        except (ValueError, OmegaConfBaseException) as err:
            raise ConfigError(str(err).split("\n")[0]) from None
