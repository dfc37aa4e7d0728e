// Write rulebox rules in JavaScript.
//
// A rule is a class with an `evaluate(req)` method returning a `Decision`; `sdk/js/build.sh`
// bundles it with this module and makes it the component's `evaluate` export
// (componentize-js). The module has no imports, so rule logic is unit-tested with node's
// test runner, no Wasm toolchain needed:
//
//   import { Decision, Request, num } from "../../../sdk/js/rulebox-rule.js";
//   export default class AmountLimit {
//     evaluate(req) {
//       const amount = req.fact("order.amount", "number");  // missing or mistyped: invalid-input
//       const max = req.setting("max", 5000, "number");     // mistyped setting: failed
//       return amount > max ? Decision.deny(`${num(amount)} over ${num(max)}`) : Decision.allow();
//     }
//   }

export const VERDICTS = ["allow", "deny", "review", "abstain"];

/** The input lacks or mistypes something the rule needs (WIT `rule-error.invalid-input`). */
export class InvalidInput extends Error {}

/** The rule could not reach a decision: bad settings, missing data (`rule-error.failed`). */
export class Failed extends Error {}

/** A verdict, an optional score, reasons, and output data (any JSON value). */
export class Decision {
  constructor(verdict, { score, reasons = [], output } = {}) {
    if (!VERDICTS.includes(verdict)) {
      throw new TypeError(`verdict ${JSON.stringify(verdict)} is not one of ${VERDICTS.join(", ")}`);
    }
    this.verdict = verdict;
    this.score = score;
    this.reasons = reasons;
    this.output = output;
  }
}
// Decision.allow(...reasons, { score, output }?), and likewise deny, review, abstain.
for (const verdict of VERDICTS) {
  Decision[verdict] = (...args) => {
    const last = args[args.length - 1];
    const options = typeof last === "object" && last !== null ? args.pop() : {};
    return new Decision(verdict, { ...options, reasons: args.map(String) });
  };
}

function typeName(v) {
  if (v === null || v === undefined) return "null";
  if (Array.isArray(v)) return "an array";
  return { number: "a number", string: "a string", boolean: "a boolean", object: "an object" }[typeof v] ?? typeof v;
}

const KINDS = {
  number: (v) => typeof v === "number",
  integer: (v) => Number.isInteger(v),
  string: (v) => typeof v === "string",
  boolean: (v) => typeof v === "boolean",
  array: (v) => Array.isArray(v),
  object: (v) => typeof v === "object" && v !== null && !Array.isArray(v),
};

const KIND_NAMES = {
  number: "a number",
  integer: "an integer",
  string: "a string",
  boolean: "a boolean",
  array: "an array",
  object: "an object",
};

function typed(value, kind, what, ErrorClass) {
  if (kind === undefined) return value;
  const check = KINDS[kind];
  if (!check) throw new TypeError(`unknown kind ${kind}: one of ${Object.keys(KINDS).join(", ")}`);
  if (!check(value)) {
    throw new ErrorClass(`${what}: expected ${KIND_NAMES[kind]}, got ${typeName(value)} ${JSON.stringify(value)}`);
  }
  return value;
}

const parsedSettings = new Map();

/** One evaluation's request. In unit tests: `new Request({ facts: { "order.amount": 10 }, settings: { max: 5 } })`. */
export class Request {
  constructor({ facts = {}, settings = {}, upstream = {}, document, settingsJson, documentJson } = {}) {
    this.facts = facts;
    this.settingsJson = settingsJson ?? JSON.stringify(settings);
    this.upstreams = upstream;
    this.documentJson = documentJson ?? (document === undefined ? undefined : JSON.stringify(document));
  }

  /** The fact at `path` (checked against `kind` when given); missing, null or mistyped is InvalidInput. */
  fact(path, kind) {
    const value = this.facts[path];
    if (value === undefined || value === null) throw new InvalidInput(`missing fact \`${path}\``);
    return typed(value, kind, `fact \`${path}\``, InvalidInput);
  }

  /** The fact at `path`, or undefined when absent or null; mistyped is still an error. */
  factOpt(path, kind) {
    const value = this.facts[path];
    return value === undefined || value === null ? undefined : typed(value, kind, `fact \`${path}\``, InvalidInput);
  }

  /** The settings, parsed once per rule instance (their text never changes within one). */
  get settings() {
    let parsed = parsedSettings.get(this.settingsJson);
    if (parsed === undefined) {
      try {
        parsed = JSON.parse(this.settingsJson);
      } catch (e) {
        throw new Failed(`settings are not JSON: ${e.message}`);
      }
      if (parsedSettings.size >= 16) parsedSettings.clear();
      parsedSettings.set(this.settingsJson, parsed);
    }
    return parsed;
  }

  /** One setting, or `fallback` when absent (no fallback: missing is Failed); mistyped is Failed. */
  setting(key, fallback, kind) {
    const value = this.settings[key];
    if (value === undefined || value === null) {
      if (arguments.length < 2) throw new Failed(`missing setting \`${key}\``);
      return fallback;
    }
    return typed(value, kind, `setting \`${key}\``, Failed);
  }

  /** The decision of an upstream rule, if this rule depends on it and it decided. */
  upstream(rule) {
    return this.upstreams[rule];
  }

  /** The whole input document; only rules that read `*` get it. */
  document() {
    if (this.documentJson === undefined) throw new Failed('no document: a rule must declare reads = ["*"] to get it');
    return JSON.parse(this.documentJson);
  }
}

/** A number as the Rust SDK's rules print one (12000, 7250.5), so reasons read alike. */
export function num(x) {
  return String(x);
}

let hostLog = (level, message) => console.error(`[${level}] ${message}`);
/** Writes to the host's log under the rule's name (to stderr when run natively). */
export const log = Object.fromEntries(
  ["trace", "debug", "info", "warn", "error"].map((level) => [level, (message) => hostLog(level, String(message))]),
);

/** JSON text with object keys sorted, as the Rust SDK (serde_json) writes outputs. */
export function sortedJson(value) {
  return JSON.stringify(value, (_, v) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]))
      : v,
  );
}

function fromWitValue(v) {
  switch (v.tag) {
    case "null":
      return null;
    case "integer":
      return Number(v.val);
    case "json":
      return JSON.parse(v.val);
    default:
      return v.val;
  }
}

function fromWitDecision(d) {
  return new Decision(d.verdict, { score: d.score, reasons: d.reasons, output: d.output === undefined ? undefined : JSON.parse(d.output) });
}

/**
 * The component's `evaluate` export for `RuleClass` (what build.sh's entry module exports),
 * with `host` the imported `rulebox:rule/host` interface. InvalidInput and Failed become the
 * WIT rule-error; any other exception a trap.
 */
export function exportRule(RuleClass, host) {
  if (host) hostLog = (level, message) => host.log(level, message);
  const rule = new RuleClass();
  return function evaluate(request) {
    const req = new Request({
      facts: Object.fromEntries(request.facts.map((f) => [f.path, fromWitValue(f.value)])),
      settingsJson: request.settings,
      upstream: Object.fromEntries(request.upstream.map((u) => [u.rule, fromWitDecision(u.decision)])),
      documentJson: request.document,
    });
    let d;
    try {
      d = rule.evaluate(req);
    } catch (e) {
      if (e instanceof InvalidInput || e instanceof Failed) {
        const error = new Error(e.message);
        error.payload = { tag: e instanceof InvalidInput ? "invalid-input" : "failed", val: e.message };
        throw error;
      }
      // Anything else is a bug in the rule: it traps, and the host reports this line with
      // the trap (a component built without stdio has nowhere else to say it).
      hostLog("error", `rule threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
      throw e;
    }
    if (!(d instanceof Decision)) {
      const error = new Error("evaluate did not return a Decision");
      error.payload = { tag: "failed", val: error.message };
      throw error;
    }
    return {
      verdict: d.verdict,
      score: d.score === undefined || d.score === null ? undefined : Number(d.score),
      reasons: d.reasons.map(String),
      output: d.output === undefined || d.output === null ? undefined : sortedJson(d.output),
    };
  };
}
