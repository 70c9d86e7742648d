"""Issuance policy: TOML in, frozen dataclasses out.

This is the only module that parses `policies/*.toml`. Every error names the file, the
key path and the reason, because an operator editing a policy at 3 a.m. must not have
to guess. Unknown keys are errors: a typo must never silently weaken a profile.
"""

from __future__ import annotations

import hashlib
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pki.errors import PolicyError
from pki.keys import HASHES, KeySpec

ProfileKind = Literal["ca", "csr", "server", "ocsp-signer"]
PROFILE_KINDS: tuple[ProfileKind, ...] = ("ca", "csr", "server", "ocsp-signer")

KEY_USAGES = (
    "digitalSignature",
    "nonRepudiation",
    "keyEncipherment",
    "dataEncipherment",
    "keyAgreement",
    "keyCertSign",
    "cRLSign",
)
EXTENDED_KEY_USAGES = ("serverAuth", "clientAuth", "OCSPSigning")
DEFAULT_OCSP_VALIDITY_HOURS = 24
MAX_OCSP_VALIDITY_HOURS = 7 * 24
SUBJECT_ATTRIBUTES = ("CN", "O", "OU", "C", "L", "ST", "DC", "serialNumber")
TEMPLATE_FIELDS = (
    "organization",
    "country",
    "host",
    "issuer.cn",
    "station.id",
    "station.serial",
    "station.secc_id",
)


@dataclass(frozen=True)
class RenewalRule:
    """When a certificate becomes due: a fixed lead time, or a fraction of its lifetime."""

    before_expiry_days: int | None = None
    lifetime_fraction: Fraction | None = None

    def describe(self) -> str:
        if self.before_expiry_days is not None:
            return f"{self.before_expiry_days} days before expiry"
        return f"at {self.lifetime_fraction} of lifetime"


@dataclass(frozen=True)
class KeyPolicy:
    """Keys a CSR may carry: listed EC curves, RSA from a minimum size (None = no RSA)."""

    ec_curves: frozenset[str]
    rsa_min_bits: int | None

    def describe(self) -> str:
        parts = [f"ec:{c}" for c in sorted(self.ec_curves)]
        if self.rsa_min_bits is not None:
            parts.append(f"rsa>={self.rsa_min_bits}")
        return ", ".join(parts) or "none"


@dataclass(frozen=True)
class SubjectTemplate:
    """One subject attribute: its short name and a template over the bound identity."""

    attribute: str
    template: str

    @cached_property
    def fields(self) -> tuple[str, ...]:
        """The ``{field}`` names the template uses (parsed once: rendered per issuance)."""
        return tuple(template_fields(self.template))

    def render(self, bindings: Mapping[str, str | None]) -> str | None:
        """The value, or None when a field it needs is not bound (e.g. no SECC id)."""
        values: dict[str, str] = {}
        for name in self.fields:
            value = bindings.get(name)
            if value is None:
                return None
            values[name] = value
        out = self.template
        for name, value in values.items():
            out = out.replace("{" + name + "}", value)
        return out


@dataclass(frozen=True)
class Profile:
    name: str
    kind: ProfileKind
    issuer: str | None
    hierarchy: str | None
    path_length: int | None
    key: KeySpec | None
    server_keys: tuple[KeySpec, ...]
    allowed_keys: KeyPolicy
    signature_hash: str
    validity_days: int
    max_validity_days: int
    backdate_seconds: int
    validity_spread_days: int
    """Each certificate is issued for up to this many days less than `validity_days`
    (an amount drawn from its serial), so that certificates issued on one day -- a
    fleet's factory cohort renewed at once -- do not all expire on one day again."""
    key_usage: tuple[str, ...]
    key_usage_rsa: tuple[str, ...] | None
    extended_key_usage: tuple[str, ...]
    revocation_info: bool
    iso15118: bool
    renewal: RenewalRule
    subject: tuple[SubjectTemplate, ...]

    @property
    def is_ca(self) -> bool:
        return self.kind == "ca"

    def key_usage_for(self, algorithm: str) -> tuple[str, ...]:
        if algorithm == "rsa" and self.key_usage_rsa is not None:
            return self.key_usage_rsa
        return self.key_usage


@dataclass(frozen=True)
class Policy:
    source: str
    digest: str
    tls_min_version: str
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    ocsp_validity: timedelta = timedelta(hours=DEFAULT_OCSP_VALIDITY_HOURS)
    """How long an OCSP response of ours is valid (thisUpdate to nextUpdate)."""

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(sorted(self.profiles))
            raise PolicyError(f"unknown profile {name!r} (known: {known})") from None

    def ca_profiles(self, hierarchies: frozenset[str]) -> list[Profile]:
        """CA profiles of the given hierarchies, every issuer before what it issues."""
        selected = [p for p in self.profiles.values() if p.is_ca and p.hierarchy in hierarchies]
        ordered: list[Profile] = []
        placed: set[str] = set()
        while len(ordered) < len(selected):
            ready = [
                p
                for p in selected
                if p.name not in placed and (p.issuer is None or p.issuer in placed)
            ]
            if not ready:
                missing = sorted({p.issuer or "" for p in selected if p.name not in placed})
                raise PolicyError(
                    f"{self.source}: CA profiles depend on issuers outside the selected "
                    f"hierarchies: {', '.join(missing)}"
                )
            ordered.extend(ready)
            placed.update(p.name for p in ready)
        return ordered


def template_fields(template: str) -> list[str]:
    """The ``{field}`` names of a subject template. Conversions and format specs
    (``{x!r}``, ``{x:>9}``) are refused: rendering is plain substitution, and a
    template it cannot render must not reach a certificate literally."""
    fields = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if spec or conversion:
            raise ValueError(f"{{{name}}} has a conversion or format spec; use plain {{{name}}}")
        fields.append(name)
    return fields


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_policy(text, source=str(path))


def parse_policy(text: str, *, source: str) -> Policy:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from exc
    return _PolicyParser(source).parse(data, hashlib.sha256(text.encode()).hexdigest())


class _PolicyParser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, reason: str) -> PolicyError:
        return PolicyError(f"{self.source}: {key}: {reason}")

    def parse(self, data: dict[str, Any], digest: str) -> Policy:
        self._only(data, "", {"schema", "tls", "ocsp", "defaults", "profiles"})
        if data.get("schema") != 1:
            raise self.fail("schema", "must be 1")
        tls = self._table(data, "tls", "tls")
        self._only(tls, "tls", {"min_version"})
        min_version = tls.get("min_version", "1.3")
        if min_version not in ("1.2", "1.3"):
            raise self.fail("tls.min_version", 'must be "1.2" or "1.3"')
        ocsp = self._table(data, "ocsp", "ocsp")
        self._only(ocsp, "ocsp", {"validity_hours"})
        ocsp_hours = (
            self._positive_int(ocsp, "validity_hours", "ocsp")
            if "validity_hours" in ocsp else DEFAULT_OCSP_VALIDITY_HOURS
        )  # fmt: skip
        if ocsp_hours > MAX_OCSP_VALIDITY_HOURS:
            raise self.fail("ocsp.validity_hours", f"at most {MAX_OCSP_VALIDITY_HOURS} (7 days)")
        defaults = self._table(data, "defaults", "defaults")
        self._only(defaults, "defaults", {"signature_hash", "backdate_seconds"})
        raw_profiles = self._table(data, "profiles", "profiles")
        if not raw_profiles:
            raise self.fail("profiles", "at least one profile is required")
        profiles = {
            name: self._profile(name, self._table(raw_profiles, name, f"profiles.{name}"), defaults)
            for name in raw_profiles
        }
        for profile in profiles.values():
            self._check_issuer(profile, profiles)
        return Policy(
            source=self.source, digest=digest, tls_min_version=min_version, profiles=profiles,
            ocsp_validity=timedelta(hours=ocsp_hours),
        )  # fmt: skip

    def _profile(self, name: str, raw: dict[str, Any], defaults: dict[str, Any]) -> Profile:
        at = f"profiles.{name}"
        self._only(
            raw,
            at,
            {
                "kind",
                "issuer",
                "hierarchy",
                "path_length",
                "key",
                "keys",
                "allowed_keys",
                "signature_hash",
                "validity_days",
                "max_validity_days",
                "backdate_seconds",
                "validity_spread_days",
                "key_usage",
                "key_usage_rsa",
                "extended_key_usage",
                "revocation_info",
                "iso15118",
                "renewal",
                "subject",
            },
        )
        kind = raw.get("kind")
        if kind not in PROFILE_KINDS:
            raise self.fail(f"{at}.kind", f"must be one of {', '.join(PROFILE_KINDS)}")
        required = {
            "ca": ("key", "hierarchy"),
            "csr": ("issuer", "allowed_keys"),
            "server": ("issuer", "keys", "hierarchy"),
            "ocsp-signer": ("key",),
        }[kind]
        for key in (*required, "validity_days", "key_usage", "renewal", "subject"):
            if key not in raw:
                raise self.fail(f"{at}.{key}", f"is required for kind {kind!r}")
        if kind == "ocsp-signer" and "issuer" in raw:
            raise self.fail(f"{at}.issuer", "an OCSP signer is issued by every CA; omit it")
        validity = self._positive_int(raw, "validity_days", at)
        max_validity = (
            self._positive_int(raw, "max_validity_days", at)
            if "max_validity_days" in raw
            else validity
        )
        if max_validity < validity:
            raise self.fail(f"{at}.max_validity_days", "must be >= validity_days")
        signature_hash = raw.get("signature_hash", defaults.get("signature_hash", "sha256"))
        if signature_hash not in HASHES:
            raise self.fail(f"{at}.signature_hash", f"must be one of {', '.join(HASHES)}")
        backdate = raw.get("backdate_seconds", defaults.get("backdate_seconds", 60))
        if (
            not isinstance(backdate, int)
            or isinstance(backdate, bool)
            or not 0 <= backdate <= 86400
        ):
            raise self.fail(f"{at}.backdate_seconds", "must be an integer from 0 to 86400")
        spread = raw.get("validity_spread_days", 0)
        if not isinstance(spread, int) or isinstance(spread, bool) or not 0 <= spread < validity:
            raise self.fail(
                f"{at}.validity_spread_days", "must be an integer from 0 to validity_days - 1"
            )
        path_length = raw.get("path_length")
        if path_length is not None:
            if kind != "ca":
                raise self.fail(f"{at}.path_length", "only CA profiles have a path length")
            if not isinstance(path_length, int) or isinstance(path_length, bool) or path_length < 0:
                raise self.fail(f"{at}.path_length", "must be a non-negative integer")
        key_usage = self._key_usage(raw, at, kind)
        profile = Profile(
            name=name,
            kind=kind,
            issuer=self._optional_str(raw, "issuer", at),
            hierarchy=self._optional_str(raw, "hierarchy", at),
            path_length=path_length,
            key=self._key_spec(raw["key"], f"{at}.key") if "key" in raw else None,
            server_keys=tuple(self._key_spec(k, f"{at}.keys") for k in self._list(raw, "keys", at)),
            allowed_keys=self._key_policy(raw, at),
            signature_hash=signature_hash,
            validity_days=validity,
            max_validity_days=max_validity,
            backdate_seconds=backdate,
            validity_spread_days=spread,
            key_usage=key_usage,
            key_usage_rsa=(
                self._names(raw, "key_usage_rsa", at, KEY_USAGES)
                if "key_usage_rsa" in raw
                else None
            ),
            extended_key_usage=self._names(raw, "extended_key_usage", at, EXTENDED_KEY_USAGES),
            revocation_info=self._bool(raw, "revocation_info", at),
            iso15118=self._bool(raw, "iso15118", at),
            renewal=self._renewal(raw, at),
            subject=self._subject(raw, at),
        )
        if profile.iso15118:
            self._check_iso15118(profile, at)
        return profile

    def _key_usage(self, raw: dict[str, Any], at: str, kind: str) -> tuple[str, ...]:
        key_usage = self._names(raw, "key_usage", at, KEY_USAGES)
        if kind == "ca" and "keyCertSign" not in key_usage:
            raise self.fail(f"{at}.key_usage", "a CA profile must include keyCertSign")
        if kind != "ca" and {"keyCertSign", "cRLSign"} & set(key_usage):
            raise self.fail(f"{at}.key_usage", "keyCertSign/cRLSign are for CA profiles only")
        return key_usage

    def _check_iso15118(self, profile: Profile, at: str) -> None:
        p256 = KeySpec("ec", curve="secp256r1")
        keys = [*([profile.key] if profile.key else []), *profile.server_keys]
        if any(k != p256 for k in keys) or (
            profile.kind == "csr"
            and (
                profile.allowed_keys.ec_curves != {"secp256r1"}
                or profile.allowed_keys.rsa_min_bits is not None
            )
        ):
            raise self.fail(f"{at}.iso15118", "ISO 15118-2 profiles allow only ec:secp256r1 keys")
        if profile.signature_hash != "sha256":
            raise self.fail(f"{at}.signature_hash", "ISO 15118-2 requires sha256")
        if not any(t.attribute == "DC" for t in profile.subject):
            raise self.fail(f"{at}.subject", "ISO 15118-2 certificates need a DC attribute")

    def _check_issuer(self, profile: Profile, profiles: Mapping[str, Profile]) -> None:
        if profile.issuer is None:
            return
        issuer = profiles.get(profile.issuer)
        if issuer is None or not issuer.is_ca:
            raise self.fail(
                f"profiles.{profile.name}.issuer", f"{profile.issuer!r} is not a CA profile"
            )
        seen = {profile.name}
        while issuer is not None and issuer.issuer is not None:
            if issuer.name in seen:
                raise self.fail(f"profiles.{profile.name}.issuer", "issuer chain has a cycle")
            seen.add(issuer.name)
            issuer = profiles.get(issuer.issuer)

    def _key_policy(self, raw: dict[str, Any], at: str) -> KeyPolicy:
        curves: set[str] = set()
        rsa_min: int | None = None
        for spec in (
            self._key_spec(k, f"{at}.allowed_keys") for k in self._list(raw, "allowed_keys", at)
        ):
            if spec.algorithm == "ec":
                assert spec.curve is not None
                curves.add(spec.curve)
            else:
                rsa_min = spec.bits if rsa_min is None else min(rsa_min, spec.bits or rsa_min)
        return KeyPolicy(frozenset(curves), rsa_min)

    def _renewal(self, raw: dict[str, Any], at: str) -> RenewalRule:
        rule = raw["renewal"]
        key = f"{at}.renewal"
        if not isinstance(rule, dict) or len(rule) != 1:
            raise self.fail(
                key, 'must be { before_expiry_days = N } or { lifetime_fraction = "2/3" }'
            )
        ((name, value),) = rule.items()
        if name == "before_expiry_days":
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise self.fail(f"{key}.before_expiry_days", "must be a positive integer")
            return RenewalRule(before_expiry_days=value)
        if name == "lifetime_fraction":
            try:
                fraction = Fraction(str(value))
            except (ValueError, ZeroDivisionError):
                raise self.fail(
                    f"{key}.lifetime_fraction", 'must be a fraction such as "2/3"'
                ) from None
            if not 0 < fraction < 1:
                raise self.fail(f"{key}.lifetime_fraction", "must be between 0 and 1")
            return RenewalRule(lifetime_fraction=fraction)
        raise self.fail(f"{key}.{name}", "unknown rule (before_expiry_days, lifetime_fraction)")

    def _subject(self, raw: dict[str, Any], at: str) -> tuple[SubjectTemplate, ...]:
        subject = self._table(raw, "subject", f"{at}.subject")
        if not subject:
            raise self.fail(f"{at}.subject", "must name at least one attribute")
        templates = []
        for attribute, template in subject.items():
            key = f"{at}.subject.{attribute}"
            if attribute not in SUBJECT_ATTRIBUTES:
                raise self.fail(key, f"unknown attribute (known: {', '.join(SUBJECT_ATTRIBUTES)})")
            if not isinstance(template, str) or not template:
                raise self.fail(key, "must be a non-empty string")
            try:
                fields = template_fields(template)
            except ValueError as exc:
                raise self.fail(key, f"bad template: {exc}") from None
            for name in fields:
                if name not in TEMPLATE_FIELDS:
                    raise self.fail(
                        key, f"unknown field {{{name}}} (known: {', '.join(TEMPLATE_FIELDS)})"
                    )
            templates.append(SubjectTemplate(attribute, template))
        return tuple(templates)

    # --- small typed readers -----------------------------------------------------

    def _only(self, raw: dict[str, Any], at: str, allowed: set[str]) -> None:
        for key in raw:
            if key not in allowed:
                where = f"{at}.{key}" if at else key
                raise self.fail(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def _table(self, raw: dict[str, Any], key: str, at: str) -> dict[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(at, "must be a table")
        return value

    def _list(self, raw: dict[str, Any], key: str, at: str) -> list[Any]:
        value = raw.get(key, [])
        if not isinstance(value, list):
            raise self.fail(f"{at}.{key}", "must be a list")
        return value

    def _names(
        self, raw: dict[str, Any], key: str, at: str, known: tuple[str, ...]
    ) -> tuple[str, ...]:
        values = self._list(raw, key, at)
        for value in values:
            if value not in known:
                raise self.fail(
                    f"{at}.{key}", f"unknown value {value!r} (known: {', '.join(known)})"
                )
        return tuple(values)

    def _key_spec(self, value: Any, at: str) -> KeySpec:
        if not isinstance(value, str):
            raise self.fail(at, 'key specs are strings such as "ec:secp256r1"')
        try:
            return KeySpec.parse(value)
        except ValueError as exc:
            raise self.fail(at, str(exc)) from None

    def _positive_int(self, raw: dict[str, Any], key: str, at: str) -> int:
        value = raw[key]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise self.fail(f"{at}.{key}", "must be a positive integer")
        return value

    def _optional_str(self, raw: dict[str, Any], key: str, at: str) -> str | None:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(f"{at}.{key}", "must be a string")
        return value

    def _bool(self, raw: dict[str, Any], key: str, at: str) -> bool:
        value = raw.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(f"{at}.{key}", "must be true or false")
        return value
