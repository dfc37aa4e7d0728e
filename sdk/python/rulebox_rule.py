"""Write rulebox rules in Python.

A rule is a class with an ``evaluate(self, req: Request) -> Decision`` method; ``export``
turns it into the component's ``evaluate`` export when built by ``sdk/python/build.sh``
(componentize-py). The same module runs under plain CPython, so rule logic is unit-tested
with pytest, no Wasm toolchain needed::

    from rulebox_rule import Decision, InvalidInput, Request, export, num

    class AmountLimit:
        def evaluate(self, req: Request) -> Decision:
            amount = req.fact("order.amount", float)   # missing or mistyped: invalid-input
            limit = req.setting("max", 5000.0, float)  # mistyped setting: failed
            if amount > limit:
                return Decision.deny(f"{num(amount)} over {num(limit)}")
            return Decision.allow()

    WitWorld = export(AmountLimit)

    # A native unit test of the same logic:
    d = AmountLimit().evaluate(Request(facts={"order.amount": 7000}))
    assert d.verdict == "deny"
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

__all__ = [
    "Decision",
    "Failed",
    "InvalidInput",
    "Request",
    "RuleError",
    "export",
    "log",
    "num",
]

VERDICTS = ("allow", "deny", "review", "abstain")


class RuleError(Exception):
    """Why a rule could not decide; becomes the WIT ``rule-error``."""


class InvalidInput(RuleError):
    """The input lacks or mistypes something the rule needs."""


class Failed(RuleError):
    """The rule could not reach a decision (bad settings, missing data, ...)."""


@dataclass
class Decision:
    """A rule's decision: a verdict, an optional score, reasons, and output data (any
    JSON-serializable value, handed to dependent rules and returned to the caller)."""

    verdict: str
    score: Optional[float] = None
    reasons: list[str] = field(default_factory=list)
    output: Any = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {', '.join(VERDICTS)}")

    # Decision.allow("why", score=0.2, output={...}), and likewise deny, review, abstain.
    allow: ClassVar[Callable[..., "Decision"]]
    deny: ClassVar[Callable[..., "Decision"]]
    review: ClassVar[Callable[..., "Decision"]]
    abstain: ClassVar[Callable[..., "Decision"]]


def _builder(verdict: str) -> classmethod:
    def build(cls: type, *reasons: str, score: Optional[float] = None, output: Any = None) -> Decision:
        return cls(verdict, score, list(reasons), output)

    build.__doc__ = f"A {verdict} decision with these reasons, score and output."
    return classmethod(build)


for _verdict in VERDICTS:
    setattr(Decision, _verdict, _builder(_verdict))


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "an array", dict: "an object"}


def _typed(value: Any, kind: Optional[type], what: str, error: type[RuleError]) -> Any:
    """``value`` as ``kind`` (``float`` accepts integers), or ``error`` naming ``what``."""
    if kind is None:
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is not int and kind is not float and isinstance(value, kind):
        return value
    got = "null" if value is None else _TYPE_NAMES.get(type(value), type(value).__name__)
    raise error(f"{what}: expected {_TYPE_NAMES.get(kind, kind.__name__)}, got {got} {json.dumps(value)}")


_MISSING = object()
_SETTINGS: dict[str, dict[str, Any]] = {}


class Request:
    """One evaluation's request: the facts the rule declared it reads (by path), upstream
    decisions (by rule), settings, and the whole document for rules that read ``*``.
    Build one in unit tests: ``Request(facts={"order.amount": 10}, settings={"max": 5})``."""

    def __init__(self, facts: Optional[dict[str, Any]] = None, settings: Optional[dict] = None,
                 upstream: Optional[dict[str, Decision]] = None, document: Any = None,
                 settings_json: Optional[str] = None, document_json: Optional[str] = None):
        self.facts = dict(facts or {})
        self.settings_json = settings_json if settings_json is not None else json.dumps(settings or {})
        self.upstreams = dict(upstream or {})
        self.document_json = document_json if document is None else json.dumps(document)

    def fact(self, path: str, kind: Optional[type] = None) -> Any:
        """The fact at ``path`` (as ``kind`` when given); missing, null or mistyped is
        :class:`InvalidInput` naming the path."""
        value = self.facts.get(path)
        if value is None:
            raise InvalidInput(f"missing fact `{path}`")
        return _typed(value, kind, f"fact `{path}`", InvalidInput)

    def fact_opt(self, path: str, kind: Optional[type] = None) -> Any:
        """The fact at ``path``, or None when absent or null; mistyped is still an error."""
        value = self.facts.get(path)
        return None if value is None else _typed(value, kind, f"fact `{path}`", InvalidInput)

    @property
    def settings(self) -> dict[str, Any]:
        """The rule's settings, parsed once per rule instance (the text never changes within
        one), not on every evaluation."""
        parsed = _SETTINGS.get(self.settings_json)
        if parsed is None:
            try:
                parsed = json.loads(self.settings_json)
            except ValueError as e:
                raise Failed(f"settings are not JSON: {e}") from None
            if len(_SETTINGS) >= 16:
                _SETTINGS.clear()
            _SETTINGS[self.settings_json] = parsed
        return parsed

    def setting(self, key: str, default: Any = _MISSING, kind: Optional[type] = None) -> Any:
        """One setting (as ``kind`` when given), or ``default`` when absent; missing without a
        default, or mistyped, is :class:`Failed` (settings come from the bundle)."""
        value = self.settings.get(key)
        if value is None:
            if default is _MISSING:
                raise Failed(f"missing setting `{key}`")
            return default
        return _typed(value, kind, f"setting `{key}`", Failed)

    def upstream(self, rule: str) -> Optional[Decision]:
        """The decision of an upstream rule, if this rule depends on it and it decided."""
        return self.upstreams.get(rule)

    def document(self) -> Any:
        """The whole input document; only rules that read ``*`` get it."""
        if self.document_json is None:
            raise Failed('no document: a rule must declare reads = ["*"] to get it')
        return json.loads(self.document_json)


def num(x: float) -> str:
    """A number as the Rust SDK's rules print one (``12000`` for 12000.0, ``7250.5``), so
    reasons read alike whatever language a rule is in."""
    if isinstance(x, float) and x.is_integer() and math.isfinite(x) and abs(x) < 1e16:
        return str(int(x))
    return repr(x)


class _Log:
    """Writes to the host's log under the rule's name (to stderr when run natively)."""

    def _write(self, level: int, message: str) -> None:
        try:
            from wit_world.imports import host, types
        except ImportError:
            print(f"[{('trace', 'debug', 'info', 'warn', 'error')[level]}] {message}", file=sys.stderr)
            return
        host.log(types.LogLevel(level), message)

    def trace(self, message: str) -> None:
        self._write(0, message)

    def debug(self, message: str) -> None:
        self._write(1, message)

    def info(self, message: str) -> None:
        self._write(2, message)

    def warn(self, message: str) -> None:
        self._write(3, message)

    def error(self, message: str) -> None:
        self._write(4, message)


log = _Log()


def _from_wit_value(v: Any) -> Any:
    from wit_world.imports import types

    if isinstance(v, types.Value_Json):
        return json.loads(v.value)
    if isinstance(v, types.Value_Null):
        return None
    return v.value


def _from_wit_decision(d: Any) -> Decision:
    return Decision(VERDICTS[d.verdict.value], d.score, list(d.reasons),
                    None if d.output is None else json.loads(d.output))


def export(rule: type) -> Callable:
    """The ``WitWorld`` class componentize-py looks for: assign it in the rule's module
    (``WitWorld = export(MyRule)``). Runs ``rule().evaluate`` on each request; its
    :class:`InvalidInput` and :class:`Failed` become the WIT ``rule-error``, any other
    exception a trap whose message the host reports. Natively (unit tests, where there are
    no bindings) it returns None, so the rule's module imports the same way in both."""
    try:
        import wit_world
        from componentize_py_types import Err
        from wit_world.imports import types
    except ImportError:
        return None

    instance = rule()

    class WitWorld(wit_world.WitWorld):
        def evaluate(self, request: Any) -> Any:
            req = Request(
                facts={f.path: _from_wit_value(f.value) for f in request.facts},
                settings_json=request.settings,
                upstream={u.rule: _from_wit_decision(u.decision) for u in request.upstream},
                document_json=request.document,
            )
            try:
                d = instance.evaluate(req)
            except InvalidInput as e:
                raise Err(types.RuleError_InvalidInput(str(e)))
            except Failed as e:
                raise Err(types.RuleError_Failed(str(e)))
            if not isinstance(d, Decision):
                raise Err(types.RuleError_Failed(f"evaluate returned {type(d).__name__}, not a Decision"))
            return types.Decision(
                types.Verdict[d.verdict.upper()],
                None if d.score is None else float(d.score),
                [str(r) for r in d.reasons],
                # Keys sorted, as the Rust SDK (serde_json) writes them: outputs compare alike.
                None if d.output is None else json.dumps(d.output, separators=(",", ":"), sort_keys=True),
            )

    return WitWorld
