"""The one configuration object: a TOML file plus ``QC_<KEY>`` environment variables.

Precedence: built-in defaults < TOML file (``--config``) < environment. Every key can be set by an environment
variable named ``QC_`` + the key in upper case (``QC_DICOM_PORT=11113``). Lists take a comma-separated string or
JSON; tables (mappings) take JSON. Validation happens once, at start, and a bad value stops the node with a
message that names the key.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "QC_"
_AE_TITLE_RE = re.compile(r"^[\x20-\x7e]{1,16}$")


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message names the key."""


def _check_ae_title(value: str, key: str) -> str:
    stripped = value.strip()
    if not stripped or not _AE_TITLE_RE.match(stripped) or "\\" in stripped:
        raise ValueError(f"{key}: AE title must be 1-16 printable ASCII characters without backslash, got {value!r}")
    return stripped


class Settings(BaseModel):
    """Every setting of the node. Field names are the TOML keys and, upper-cased, the ``QC_`` variables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- where things live
    data_dir: Path = Field(default=Path("./qc-data"), description="Spool, quarantine, SQLite database, run files.")
    database_url: str = Field(default="", description="SQLAlchemy URL; default sqlite:///<data_dir>/qc.db")

    # --- DICOM listener
    ae_title: str = Field(default="QCNODE", description="Our AE title (the called AE title peers must use).")
    bind_address: str = Field(default="0.0.0.0", description="Address the DICOM listener binds to.")
    dicom_port: int = Field(default=11112, ge=1, le=65535)
    allowed_calling_aets: list[str] = Field(
        default_factory=list, description="If not empty, only these calling AE titles may associate."
    )
    require_called_aet: bool = Field(default=False, description="Reject associations not addressed to ae_title.")
    max_associations: int = Field(default=16, ge=1, le=1024, description="Simultaneous associations, in all.")
    receiver_processes: int = Field(
        default=0, ge=0, le=64, description="Receiving processes sharing the port; 0 = one per CPU core (max 4)."
    )
    max_pdu_size: int = Field(default=131072, ge=0, description="Maximum PDU we accept (0 = unlimited).")
    network_timeout_seconds: float = Field(default=60.0, gt=0)
    dimse_timeout_seconds: float = Field(default=60.0, gt=0)
    acse_timeout_seconds: float = Field(default=30.0, gt=0)
    tls_cert: Path | None = Field(default=None, description="PEM certificate: enables DICOM TLS.")
    tls_key: Path | None = None
    tls_ca: Path | None = Field(default=None, description="CA bundle: when set, peers must present a certificate.")
    disk_reserve_mb: int = Field(
        default=1024, ge=0, description="Answer out-of-resources (0xA700) when free space would drop below this."
    )
    fsync: bool = Field(default=True, description="fsync each file before acknowledging it (durability).")

    # --- series assembly and processing
    series_quiet_seconds: float = Field(default=10.0, gt=0, description="A series is complete after this silence.")
    workers: int = Field(default=1, ge=0, le=64, description="Conversion/scoring worker processes.")
    max_job_attempts: int = Field(default=3, ge=1, le=100)
    job_timeout_seconds: float = Field(default=600.0, gt=0)

    # --- conversion rules
    min_slices: int = Field(default=10, ge=1)
    include_rules: dict[str, list[str]] = Field(
        default_factory=dict, description="Header keyword -> regexes a series must match to be scored."
    )
    exclude_rules: dict[str, list[str]] = Field(
        default_factory=dict, description="Header keyword -> regexes that skip a series."
    )
    protocol_map: dict[str, str] = Field(
        default_factory=dict, description="Normalised protocol name (or regex) -> canonical protocol name."
    )

    # --- scoring
    model_path: Path | None = Field(default=None, description="ONNX model; default: the model shipped in models/.")
    ort_providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    ort_intra_op_threads: int = Field(default=2, ge=0)
    ort_inter_op_threads: int = Field(default=1, ge=0)
    threshold_overrides: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Site (station name, calling AE or scanner key) -> {artifact: threshold}; '*' applies to all.",
    )

    # --- HTTP and logs
    http_host: str = Field(default="0.0.0.0")
    http_port: int = Field(default=8080, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, v: str) -> str:
        return _check_ae_title(v, "ae_title")

    @field_validator("allowed_calling_aets")
    @classmethod
    def _calling_aets(cls, v: list[str]) -> list[str]:
        return [_check_ae_title(a, "allowed_calling_aets") for a in v if a.strip()]

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("include_rules", "exclude_rules")
    @classmethod
    def _regexes(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for key, patterns in v.items():
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"{key}: bad regular expression {pattern!r}: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        for name in ("tls_cert", "tls_key", "tls_ca"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: file not found: {path}")
        if self.model_path is not None and not Path(self.model_path).is_file():
            raise ValueError(f"model_path: file not found: {self.model_path}")
        return self

    # --- derived values
    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'qc.db'}"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def effective_receiver_processes(self) -> int:
        if self.receiver_processes:
            return self.receiver_processes
        return max(1, min(4, os.cpu_count() or 1))


def _field_kind(name: str) -> str:
    annotation = str(Settings.model_fields[name].annotation)
    if annotation.startswith("list"):
        return "list"
    if annotation.startswith("dict"):
        return "dict"
    return "scalar"


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Collect ``QC_<KEY>`` variables; unknown ``QC_`` variables are an error (a typo must not pass silently)."""
    values: dict[str, Any] = {}
    known = set(Settings.model_fields)
    ignored = {"QC_SHARED_DATA", "QC_CONFIG"}
    for env_key, raw in environ.items():
        if not env_key.startswith(ENV_PREFIX) or env_key in ignored or env_key.startswith("QC_TEST_"):
            continue
        key = env_key[len(ENV_PREFIX) :].lower()
        if key not in known:
            raise ConfigError(f"{env_key}: unknown setting (known keys: {', '.join(sorted(known))})")
        kind = _field_kind(key)
        if kind == "dict":
            try:
                values[key] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{env_key}: expected a JSON object: {exc}") from exc
        elif kind == "list":
            text = raw.strip()
            if text.startswith("["):
                try:
                    values[key] = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{env_key}: expected a JSON list or comma-separated values: {exc}") from exc
            else:
                values[key] = [part.strip() for part in text.split(",") if part.strip()]
        else:
            values[key] = raw
    return values


def _format_error(exc: ValidationError, sources: Mapping[str, str]) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "config"
        origin = sources.get(str(err["loc"][0]) if err["loc"] else "", "")
        where = f" (from {origin})" if origin else ""
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{key}{where}: {message}")
    return "invalid configuration: " + "; ".join(lines)


def load_settings(config_file: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build and validate the settings; raise :class:`ConfigError` with a message naming the bad key."""
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get("QC_CONFIG"):
        config_file = Path(environ["QC_CONFIG"])
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_file is not None:
        try:
            with open(config_file, "rb") as fh:
                file_values = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {config_file}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from exc
        unknown = sorted(set(file_values) - set(Settings.model_fields))
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown setting in {config_file}")
        values.update(file_values)
        sources.update({k: str(config_file) for k in file_values})
    env_values = _from_env(environ)
    values.update(env_values)
    sources.update({k: ENV_PREFIX + k.upper() for k in env_values})
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, sources)) from None


def describe(settings: Settings) -> dict[str, Any]:
    """The effective settings as JSON-friendly values, secrets (database password) masked."""
    data = settings.model_dump(mode="json")
    data["database_url"] = mask_url(settings.resolved_database_url)
    return data


def mask_url(url: str) -> str:
    return re.sub(r"(//[^:/@]+):[^@]+@", r"\1:***@", url)
